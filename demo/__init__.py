"""The PeerGrid demo: a simulated grid driven by a real Home Assistant, in one command.

``python -m demo`` (``make demo``) starts simulated battery nodes on 127.0.0.1,
an edge gateway with nodes of its own, and Home Assistant 2025.4 with a
prepared configuration folder: onboarding done, a demo user, the PeerGrid
entries, the Energy dashboard and the PeerGrid dashboard. Ctrl-C stops all of
it. ``python -m demo.dashboard`` writes the PeerGrid dashboard and its helpers
for any set of nodes (what ``dashboards/`` ships was written by it).
"""

from __future__ import annotations
