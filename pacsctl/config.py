"""Archive configuration (`pacsctl.toml`): local AE settings, policies and known remote nodes.

Precedence for the archive folder: `--archive DIR`, else `PACSCTL_ARCHIVE`, else the platform's
user data folder. Everything else lives in the archive's own `pacsctl.toml`, so an archive can be
moved or backed up as one folder.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path

from pacsctl.errors import UsageError

CONFIG_NAME = "pacsctl.toml"
DEFAULT_AE_TITLE = "PACSCTL"
DEFAULT_PORT = 11112
DEFAULT_MAX_INSTANCE_SIZE = 2 << 30  # 2 GiB: beyond any CT/MR instance, room for big multi-frames
_SIZE = re.compile(r"(?i)^\s*(\d+)\s*([kmgt]?)(?:i?b)?\s*$")


class OnConflict(StrEnum):
    """What to do with a second copy of a SOP Instance UID whose bytes differ from the archived one."""

    KEEP = "keep"  # keep the archived copy, quarantine the newcomer (the default)
    REPLACE = "replace"  # archive the newcomer, quarantine the old copy


ON_CONFLICT_POLICIES: tuple[OnConflict, ...] = tuple(OnConflict)

_AE_TITLE = re.compile(
    r"^[\x20-\x5b\x5d-\x7e]{1,16}$"
)  # 16 chars of the DICOM default repertoire, no backslash


@dataclass
class Node:
    """A remote DICOM node: a name for humans, and where and how to reach it."""

    name: str
    aet: str
    host: str
    port: int
    tls: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    tls_no_hostname_check: bool = False  # lab set-ups: certificates that name no host

    def __str__(self) -> str:
        return f"{self.aet}@{self.host}:{self.port}"


@dataclass
class Route:
    """A forward on arrival (`pacsctl route add`): every newly stored instance that matches goes
    to `to` (a node name or AET@host:port, `s3://BUCKET/PREFIX`, or a DICOMweb base URL)."""

    name: str
    to: str
    match: dict[str, str] = field(default_factory=dict)  # -k KEY=VALUE, DICOM matching
    delay: float = 0.0  # seconds a series must have been quiet before it goes
    max_attempts: int = 10  # refusals of one instance before it is a dead letter
    max_backoff: float = 60.0  # longest wait between tries while the destination is down
    anonymize: bool = False  # de-identified on the way out (PS3.15 Basic Profile, `anonymize`)
    key: str = ""  # the anonymization secret (this file is private to the archive's owner) ...
    key_file: str = ""  # ... or the file holding it
    # DICOMweb credentials, as files read at each request (this file keeps only their paths)
    token_file: str = ""  # Authorization: Bearer <its first line>
    user: str = ""  # with password_file: HTTP basic
    password_file: str = ""


@dataclass
class Config:
    """What `pacsctl.toml` holds. Unknown keys in the file are an error, not silently ignored."""

    ae_title: str = DEFAULT_AE_TITLE
    port: int = DEFAULT_PORT
    host: str = "0.0.0.0"
    on_conflict: OnConflict = OnConflict.KEEP
    allow: list[str] = field(default_factory=list)
    max_associations: int = 32
    acse_timeout: float = 30.0  # seconds `serve` gives a client to associate (absolute)
    dimse_timeout: float = 60.0
    network_timeout: float = 60.0  # idle association; also the longest one PDU may take
    max_instance_size: int = DEFAULT_MAX_INSTANCE_SIZE  # bytes; larger import input is skipped
    nodes: dict[str, Node] = field(default_factory=dict)
    routes: dict[str, Route] = field(default_factory=dict)


class SettingKey(StrEnum):
    """The settings `pacsctl config set KEY VALUE` may change (the flat keys of pacsctl.toml)."""

    AE_TITLE = "ae_title"
    PORT = "port"
    HOST = "host"
    ON_CONFLICT = "on_conflict"
    ALLOW = "allow"
    MAX_ASSOCIATIONS = "max_associations"
    ACSE_TIMEOUT = "acse_timeout"
    DIMSE_TIMEOUT = "dimse_timeout"
    NETWORK_TIMEOUT = "network_timeout"
    MAX_INSTANCE_SIZE = "max_instance_size"


SETTABLE_KEYS: tuple[SettingKey, ...] = tuple(SettingKey)


def default_archive_dir() -> Path:
    """The platform's per-user data folder for the default archive."""
    import platformdirs

    return Path(platformdirs.user_data_dir("pacsctl", appauthor=False)) / "archive"


def resolve_archive_dir(option: str | os.PathLike | None) -> Path:
    """The archive folder from the option, else `PACSCTL_ARCHIVE`, else the default."""
    if option:
        return Path(option).expanduser()
    env = os.environ.get("PACSCTL_ARCHIVE")
    if env:
        return Path(env).expanduser()
    return default_archive_dir()


def validate_ae_title(aet: str) -> str:
    """Return `aet` if it is a valid AE title, else raise UsageError."""
    if not _AE_TITLE.match(aet) or not aet.strip():
        raise UsageError(f"invalid AE title {aet!r}", hint="use 1-16 ASCII characters, no backslash")
    return aet


def validate_port(port: int) -> int:
    """Return `port` if it is a TCP port number, else raise UsageError."""
    if not 0 < int(port) < 65536:
        raise UsageError(f"invalid port {port}", hint="use 1-65535")
    return int(port)


def parse_node_spec(spec: str, config: Config) -> Node:
    """Resolve a node given as a configured name or inline as `AET@host:port`."""
    if spec in config.nodes:
        return config.nodes[spec]
    match = re.fullmatch(r"(?P<aet>[^@]+)@(?P<host>\[[^\]]+\]|[^:]+):(?P<port>\d+)", spec)
    if not match and re.fullmatch(r"[^@]+@(\[[^\]]+\]|[^:]+):?", spec):
        raise UsageError(f"no port in {spec!r}", hint="write AET@host:PORT, e.g. ORTHANC@10.0.0.5:4242")
    if not match:
        known = ", ".join(sorted(config.nodes)) or "none configured"
        raise UsageError(
            f"unknown node {spec!r}",
            hint=f"give a node name ({known}) or AET@host:port; add one with `pacsctl nodes add`",
        )
    return Node(
        name=spec,
        aet=validate_ae_title(match["aet"]),
        host=match["host"].strip("[]"),
        port=validate_port(int(match["port"])),
    )


def load_config(path: Path) -> Config:
    """Read `pacsctl.toml`; a missing file gives the defaults."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Config()
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: invalid TOML: {exc}", hint="fix or remove the file") from exc
    nodes_raw = raw.pop("nodes", {})
    routes_raw = raw.pop("routes", {})
    known = {f.name for f in fields(Config)} - {"nodes", "routes"}
    unknown = set(raw) - known
    if unknown:
        raise UsageError(f"{path}: unknown setting(s): {', '.join(sorted(unknown))}")
    config = Config(**raw)
    if config.on_conflict in ON_CONFLICT_POLICIES:  # else left as written: ingest names the bad value
        config.on_conflict = OnConflict(config.on_conflict)
    for name, node in nodes_raw.items():
        try:
            config.nodes[name] = Node(name=name, **node)
        except TypeError as exc:
            raise UsageError(f"{path}: node {name!r}: {exc}") from exc
    for name, route in routes_raw.items():
        try:
            config.routes[name] = Route(name=name, **route)
        except TypeError as exc:
            raise UsageError(f"{path}: route {name!r}: {exc}") from exc
    return config


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_value(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def dump_config(config: Config) -> str:
    """Serialise a Config as TOML (flat settings, then one `[nodes.NAME]` table per node)."""
    lines = [f"{key} = {_toml_value(getattr(config, key))}" for key in SETTABLE_KEYS]
    for name, node in sorted(config.nodes.items()):
        lines.append("")
        lines.append(f"[nodes.{_toml_value(name)}]")
        for key, value in asdict(node).items():
            if key != "name" and value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
    for name, route in sorted(config.routes.items()):
        lines.append("")
        lines.append(f"[routes.{_toml_value(name)}]")
        for key, value in asdict(route).items():
            if key != "name":
                lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def coerce_setting(key: str, value: str) -> object:
    """Turn `config set KEY VALUE` text into the setting's type, validating it."""
    if key not in SETTABLE_KEYS:
        raise UsageError(f"unknown setting {key!r}", hint=f"one of: {', '.join(SETTABLE_KEYS)}")
    if key == "ae_title":
        return validate_ae_title(value)
    if key == "port":
        try:
            return validate_port(int(value))
        except ValueError as exc:
            raise UsageError(f"invalid port {value!r}") from exc
    if key == "max_associations":
        if not value.isdigit() or int(value) < 1:
            raise UsageError(f"invalid max_associations {value!r}", hint="a positive integer")
        return int(value)
    if key == "on_conflict":
        try:
            return OnConflict(value)
        except ValueError:
            raise UsageError(f"invalid on_conflict {value!r}", hint="keep or replace") from None
    if key == "allow":
        return [validate_ae_title(v.strip()) for v in value.split(",") if v.strip()]
    if key.endswith("_timeout"):
        try:
            seconds = float(value)
        except ValueError:
            seconds = 0.0
        if not 0 < seconds < float("inf"):
            raise UsageError(f"invalid {key} {value!r}", hint="a number of seconds, more than 0")
        return seconds
    if key == "max_instance_size":
        return parse_size(value)
    return value


def parse_size(value: str) -> int:
    """A size in bytes from `1048576`, `512M`, `2G`, `2GiB` (binary units); UsageError if not."""
    match = _SIZE.match(value)
    if not match or int(match[1]) < 1:
        raise UsageError(
            f"invalid size {value!r}", hint="bytes, or a number with K, M, G or T (binary units), e.g. 2G"
        )
    return int(match[1]) << (10 * " kmgt".index(match[2].lower() or " "))
