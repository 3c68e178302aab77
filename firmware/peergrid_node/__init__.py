"""PeerGrid battery node firmware (MicroPython for ESP32, also runs on CPython).

The package holds the node's logic. Hardware reaches it as one injected object
(see ``board.py`` for the ESP32 build and ``node.py`` for the ``Node`` class),
so the same modules run on the ESP32, under the MicroPython unix port, under
CPython in the tests and many times over inside the grid simulator.
"""

FW_VERSION = "0.1.0"
