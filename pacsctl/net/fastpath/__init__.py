"""The receive fast path: measured fixes to pynetdicom's hot path, behind one switch.

`faststore` (C-STOREs served where the PDUs are read), `pdata` (PDUs read without copies),
`receive` (data sets streamed into the archive's tmp/, File Meta encoded directly),
`tuning` (reactors that wait for events, not timers) and `reactor` (a race in pynetdicom's
reactor that loses a response) replace private parts of pynetdicom
3.0 (`pyproject.toml` pins `pynetdicom>=3.0.4,<3.1`). `install()` first checks that every
attribute they replace or use is there; if one is missing (another pynetdicom), it warns once
and pynetdicom's own code serves, unchanged. The patches are process-wide: a process serves
through one path (the last `install(enabled)` decides).
"""

from __future__ import annotations

import inspect
import logging
import os
from typing import Any

import pynetdicom
from pydicom import config as pydicom_config

LOG = logging.getLogger(__name__)

#: Set to 0 to serve through pynetdicom's own path (`ScpOptions.fast_path` defaults to it).
ENV_SWITCH = "PACSCTL_FAST_PATH"

_originals: dict[tuple[int, str], tuple[Any, str, Any]] = {}
_warned = False
_validation_mode: int | None = None


def enabled_by_default() -> bool:
    """The fast path is on unless ``PACSCTL_FAST_PATH=0``."""
    return os.environ.get(ENV_SWITCH, "1").strip() not in ("0", "no", "false", "off")


def _modules(serving: bool = True) -> tuple[Any, ...]:
    """The patching modules: `receive` for any process that receives C-STOREs (C-GET too) and
    `reactor` (a race) for any that associates, `tuning` and `pdata` for a process serving a
    listener."""
    from pacsctl.net.fastpath import pdata, reactor, receive, tuning

    return (receive, reactor, tuning, pdata) if serving else (receive, reactor)


def _has(owner: Any, name: str) -> bool:
    """Whether `owner` (a module or class) has `name`, as a class or an instance attribute
    (one its `__init__` assigns)."""
    if hasattr(owner, name):
        return True
    if inspect.isclass(owner):
        inits = (getattr(cls.__dict__.get("__init__"), "__code__", None) for cls in owner.__mro__)
        return any(name in code.co_names for code in inits if code is not None)
    return False


def _same_parameters(original: Any, replacement: Any) -> bool:
    """Whether `replacement` takes the positional arguments `original` is called with."""
    if not (inspect.isfunction(original) and inspect.isfunction(replacement)):
        return True  # a class or module (NamedTemporaryFile, time): nothing to compare
    params = inspect.signature(replacement).parameters.values()
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        return True

    def positional(fn_params: Any) -> tuple[int, int]:
        fixed = [p for p in fn_params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        return sum(p.default is p.empty for p in fixed), len(fixed)

    orig_required, orig_total = positional(inspect.signature(original).parameters.values())
    rep_required, rep_total = positional(params)
    return rep_required <= orig_required and orig_total <= rep_total


def missing() -> list[str]:
    """What the fast path needs of pynetdicom and this pynetdicom lacks (empty: all there)."""
    out = []
    for module in _modules():
        for owner, name, replacement in module.PATCHES:
            original = _originals.get((id(owner), name), (None, None, getattr(owner, name, None)))[2]
            if (id(owner), name) not in _originals and not _has(owner, name):
                out.append(f"{owner.__name__}.{name}")
            elif not _same_parameters(original, replacement):
                out.append(f"{owner.__name__}.{name}()")
        for owner, names in getattr(module, "USES", ()):
            out.extend(f"{owner.__name__}.{n}" for n in names if not _has(owner, n))
    return out


def install(enabled: bool = True, serving: bool = True) -> bool:
    """Patch pynetdicom for the fast path (True), or leave or put back pynetdicom's own code
    (False: not `enabled`, or this pynetdicom lacks something it patches; said once). Without
    `serving`, only how received data sets are written (`receive`: C-GET on the SCU side)."""
    global _warned, _validation_mode
    if enabled:
        lacking = missing()
        if lacking:
            if not _warned:
                _warned = True
                LOG.warning(
                    "pynetdicom %s lacks what pacsctl's receive fast path patches (%s): "
                    "serving through pynetdicom's own code",
                    pynetdicom.__version__,
                    ", ".join(lacking),
                )
            enabled = False
    if not enabled:
        uninstall()
        return False
    for module in _modules(serving):
        for owner, name, replacement in module.PATCHES:
            key = (id(owner), name)
            if key not in _originals:
                _originals[key] = (owner, name, getattr(owner, name))
            setattr(owner, name, replacement)
    if serving and _validation_mode is None:
        # pydicom checks every UID made against the standard's pattern (a regex), and
        # pynetdicom makes several per message: ~10% of the CPU a received C-STORE costs here.
        # The checks only warn and nothing reads the warnings: data sets are stored as
        # received, identifiers matched as given; the values read are the same (IGNORE skips
        # checks only). Process-wide, so only set in the processes that serve a listener
        # through the fast path, and put back by `uninstall`.
        _validation_mode = pydicom_config.settings.reading_validation_mode
        pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    return True


def uninstall() -> None:
    """Put pynetdicom's own code (and pydicom's validation mode) back."""
    global _validation_mode
    for owner, name, original in _originals.values():
        setattr(owner, name, original)
    _originals.clear()
    if _validation_mode is not None:
        pydicom_config.settings.reading_validation_mode = _validation_mode
        _validation_mode = None


def installed() -> bool:
    """Whether the fast path's patches are in place."""
    return bool(_originals)
