"""What a running node takes from the archive's settings when it receives SIGHUP.

Taken at once (new associations; the ones open keep what they negotiated): the allow-list, the
ACSE/DIMSE/network time-outs, `on_conflict` and the routes (what stores queue for forwarding);
the known nodes are read at every C-MOVE anyway.
A setting given on `serve`'s command line stays as given. The AE title, host, port and
max_associations, and TLS and the number of workers (command line only), need a restart.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pacsctl.config import CONFIG_NAME, Config, load_config
from pacsctl.errors import PacsctlError

if TYPE_CHECKING:  # light to import: `pacsctl config set` reads NEED_RESTART
    from pacsctl.node.service import RunningNode

LOG = logging.getLogger(__name__)

RELOADED = ("allow", "acse_timeout", "dimse_timeout", "network_timeout", "on_conflict")
NEED_RESTART = ("ae_title", "host", "port", "max_associations")
RESTART_NOTE = "AE title, host, port, max_associations, TLS and workers need a restart"


@dataclass(frozen=True)
class Reload:
    """What one SIGHUP changed, and what changed in the file but waits for a restart."""

    applied: dict[str, tuple[object, object]]  # setting -> (old, new)
    nodes_added: list[str]
    nodes_removed: list[str]
    need_restart: list[str]


def reload_settings(node: RunningNode, fixed: frozenset[str] = frozenset()) -> Reload | None:
    """Apply the archive's current settings to `node` where that needs no restart; `fixed`
    names the settings given on the command line (kept). None when the file cannot be read
    (the node goes on as it was)."""
    archive = node.service.archive
    try:
        new = load_config(archive.root / CONFIG_NAME)
    except PacsctlError as exc:
        LOG.error("SIGHUP: settings not reloaded: %s", exc)
        return None
    old = archive.config
    options = node.scp.options
    applied: dict[str, tuple[object, object]] = {}
    for key in RELOADED:
        before = getattr(options, key) if hasattr(options, key) else getattr(old, key)
        after = getattr(new, key)
        if key in fixed or before == after:
            continue
        applied[key] = (before, after)
        if hasattr(options, key):
            setattr(options, key, after)
    _apply(node, options.allow, options.acse_timeout, options.dimse_timeout, options.network_timeout)
    need_restart = [k for k in NEED_RESTART if k not in fixed and getattr(old, k) != getattr(new, k)]
    result = Reload(
        applied,
        sorted(set(new.nodes) - set(old.nodes)),
        sorted(set(old.nodes) - set(new.nodes)),
        need_restart,
    )
    archive.config = _merged(old, new, need_restart)
    _log(result)
    return result


def _apply(node: RunningNode, allow: list[str], acse: float, dimse: float, network: float) -> None:
    ae, server = node.scp.ae, node.scp.server
    ae.require_calling_aet = list(allow)  # empty: any calling AE title
    ae.acse_timeout, ae.dimse_timeout, ae.network_timeout = acse, dimse, network
    server.handshake_timeout = acse
    server.connections.acse_timeout = acse
    server.connections.pdu_timeout = network


def _merged(old: Config, new: Config, need_restart: list[str]) -> Config:
    """The config the node runs with from now: the new one, except what needs a restart."""
    for key in need_restart:
        setattr(new, key, getattr(old, key))
    return new


def _log(result: Reload) -> None:
    changes = [f"{k}: {_shown(a)} -> {_shown(b)}" for k, (a, b) in result.applied.items()]
    if result.nodes_added:
        changes.append(f"nodes added: {', '.join(result.nodes_added)}")
    if result.nodes_removed:
        changes.append(f"nodes removed: {', '.join(result.nodes_removed)}")
    LOG.warning("SIGHUP: settings reloaded (%s); %s", "; ".join(changes) or "nothing changed", RESTART_NOTE)
    for key in result.need_restart:
        LOG.warning("SIGHUP: %s changed in the settings: takes effect after a restart", key)


def _shown(value: object) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "(anyone)"
    return str(value)
