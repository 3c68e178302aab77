# PeerGrid node entry point (runs after boot.py). Everything lives in the
# peergrid_node package; see firmware/README.md.
from peergrid_node import app

app.main()
