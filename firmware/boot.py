# PeerGrid node, first code after every reset: both relays OFF before anything
# else. Nothing here may fail or import the firmware package.
# GPIO 26 = SUPPLY (boost converter), GPIO 25 = RECEIVE (TP4056 charger);
# the relay inputs are active-high (1 = relay on).
from machine import Pin

Pin(26, Pin.OUT, value=0)
Pin(25, Pin.OUT, value=0)
