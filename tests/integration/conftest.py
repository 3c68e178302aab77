"""Fixtures for the Home Assistant side of PeerGrid.

The repository's ``custom_components`` package is imported here, before the
Home Assistant test harness puts its own test configuration folder on the
path; otherwise Home Assistant would look for the integration there.
"""

from __future__ import annotations

import pytest

import custom_components.peergrid  # noqa: F401  (see the module docstring)


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None) -> None:
    """Let Home Assistant load integrations from custom_components/."""
