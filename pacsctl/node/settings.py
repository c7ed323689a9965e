"""What a running node takes from the archive's settings when it receives SIGHUP."""

from __future__ import annotations

import logging

from pacsctl.node.service import RunningNode

LOG = logging.getLogger(__name__)


def reload_settings(node: RunningNode) -> None:
    """Apply the archive's current settings to `node` where that needs no restart."""
    LOG.info("SIGHUP: reloading settings")
