"""PeerGrid core: the grid's rules, formulas, wire protocol and models.

This package never imports Home Assistant. The integration in the parent
folder imports it relatively; the edge gateway and the tools import it as the
top-level package ``peergrid_core`` (see ``pyproject.toml``).
"""

from __future__ import annotations

__version__ = "0.1.0"
