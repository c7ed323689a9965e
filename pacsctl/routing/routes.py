"""Routes as a library: add, remove, list, status and retry (what `pacsctl route` runs).

Routes are kept in the archive's `pacsctl.toml` (`[routes.NAME]`), beside the known nodes. A
running `serve` is told with SIGHUP, so its workers queue for a new route from the next store
on (its forwarder follows the config by itself).
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pacsctl.archive.archive import Archive
from pacsctl.archive.outbox import route_dir, validate_route_name
from pacsctl.config import Route, parse_node_spec
from pacsctl.dicom.matching import compile_filters
from pacsctl.errors import UsageError
from pacsctl.node.pidfile import running_node_pid
from pacsctl.routing.forwarder import read_status
from pacsctl.routing.queue import RouteQueue


def parse_destination(to: str, archive: Archive) -> str:
    """`to` checked: a known node or AET@host:port, an `s3://BUCKET[/PREFIX]` URL or an
    http(s) DICOMweb base URL. UsageError otherwise."""
    if to.startswith(("http://", "https://")):
        from urllib.parse import urlsplit

        from pacsctl.routing.stow import StowClient

        try:
            StowClient(to)
        except ValueError:
            raise UsageError(
                f"invalid DICOMweb URL {to!r}", hint="e.g. https://pacs.example/dicom-web"
            ) from None
        if "@" in urlsplit(to).netloc:  # the URL is shown by `route list`: no secret in it
            raise UsageError(
                "a DICOMweb URL with credentials in it", hint="give them as --user and --password-file"
            )
        return to.rstrip("/")
    if to.startswith("s3://"):
        from pacsctl.storage.objects import ObjectURL

        return str(ObjectURL.parse(to))  # UsageError without a bucket
    parse_node_spec(to, archive.config)  # raises UsageError for an unknown node
    return to


def add_route(
    archive: Archive,
    name: str,
    to: str,
    match: Mapping[str, str] | None = None,
    delay: float = 0.0,
    max_attempts: int = 10,
    max_backoff: float = 60.0,
    replace: bool = False,
    anonymize: bool = False,
    key: str = "",
    key_file: str | Path = "",
    token_file: str | Path = "",
    user: str = "",
    password_file: str | Path = "",
) -> Route:
    """Add (or with `replace`, change) a route; returns it. With `anonymize`, instances are
    de-identified on the way out with `key` (or the secret in `key_file`). A DICOMweb route
    authenticates with the bearer token in `token_file`, or as `user` with the password in
    `password_file` (HTTP basic); the files are read at every request."""
    validate_route_name(name)
    if name in archive.config.routes and not replace:
        raise UsageError(f"route {name!r} exists", hint="use --replace to change it")
    if delay < 0 or max_attempts < 1 or max_backoff <= 0:
        raise UsageError("--delay must be 0 or more, --max-attempts and --max-backoff more than 0")
    match = dict(match or {})
    compile_filters(match)  # an unusable filter is refused now, not at the first store
    if (key or key_file) and not anonymize:
        raise UsageError("--key and --key-file go with --anonymize")
    if key and key_file:
        raise UsageError("--key and --key-file exclude each other", hint="give the secret one way")
    key_file = str(Path(key_file).absolute()) if key_file else ""
    route = Route(
        name, parse_destination(to, archive), match, float(delay), int(max_attempts), float(max_backoff)
    )
    route.anonymize, route.key, route.key_file = anonymize, key, key_file
    _set_auth(route, str(token_file or ""), user, str(password_file or ""))
    if anonymize:
        from pacsctl.routing.anonymized import route_key

        route_key(route)  # no key, an unreadable or empty key file: refused now
    archive.config.routes[name] = route
    archive.save_config()
    tell_node(archive.root)
    return route


def _set_auth(route: Route, token_file: str, user: str, password_file: str) -> None:
    """The route's DICOMweb credentials, checked (UsageError), their files' paths absolute."""
    if not (token_file or user or password_file):
        return
    if not route.to.startswith(("http://", "https://")):
        raise UsageError("--token-file, --user and --password-file go with a DICOMweb --to URL")
    if token_file and (user or password_file):
        raise UsageError("--token-file excludes --user/--password-file", hint="bearer or basic, not both")
    if bool(user) != bool(password_file):
        raise UsageError("--user and --password-file go together (HTTP basic)")
    if ":" in user:
        raise UsageError("a user name for HTTP basic cannot hold ':'")
    from pacsctl.routing.destinations import route_auth
    from pacsctl.routing.stow import StowError

    route.token_file = str(Path(token_file).absolute()) if token_file else ""
    route.user = user
    route.password_file = str(Path(password_file).absolute()) if password_file else ""
    auth = route_auth(route)
    try:
        if auth is not None:
            auth.header()  # a file that cannot be read now is refused now (later: the route is down)
    except StowError as exc:
        raise UsageError(str(exc), hint="the route reads it at every delivery; keep it private") from None


def auth_of(route: Route) -> str:
    """How a route authenticates, for people: "bearer", "basic" or ""."""
    from pacsctl.routing.destinations import route_auth

    auth = route_auth(route)
    return auth.kind.value if auth is not None else ""


def remove_route(archive: Archive, name: str, force: bool = False) -> int:
    """Remove a route and its outbox; returns how many undelivered entries went with it.
    Refuses while entries are undelivered, unless `force`."""
    if name not in archive.config.routes:
        raise UsageError(f"no route named {name!r}", hint="see `pacsctl route list`")
    queue = RouteQueue(archive.root, name)
    queue.refresh()
    counts = queue.counts()
    left = counts["pending"] + counts["waiting"] + counts["dead"]
    if left and not force:
        raise UsageError(
            f"route {name!r} has {left} undelivered instance(s)",
            hint="deliver them first (`pacsctl route status`), or --force to drop them",
        )
    del archive.config.routes[name]
    archive.save_config()
    tell_node(archive.root)
    shutil.rmtree(route_dir(archive.root, name), ignore_errors=True)
    return left


def tell_node(root: Path) -> None:
    """SIGHUP the `serve` running over this archive, if one is (it re-reads the routes)."""
    pid = running_node_pid(root)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGHUP)
        except OSError:
            pass


def list_routes(archive: Archive) -> list[dict[str, Any]]:
    """Every route's settings."""
    rows = []
    for _, route in sorted(archive.config.routes.items()):
        row = asdict(route)
        rows.append(row)
        row["key"] = "(set)" if row["key"] else ""  # the secret stays in the (private) config file
        row["auth"] = auth_of(route)  # the credentials' files are named, never read here
    return rows


def route_status(
    archive: Archive, name: str | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per route its counts and its destination's state; and the dead letters (UIDs only)."""
    if name is not None and name not in archive.config.routes:
        raise UsageError(f"no route named {name!r}", hint="see `pacsctl route list`")
    rows: list[dict[str, Any]] = []
    dead: list[dict[str, Any]] = []
    now = time.time()
    for route_name, route in sorted(archive.config.routes.items()):
        if name is not None and route_name != name:
            continue
        queue = RouteQueue(archive.root, route_name)
        queue.refresh()
        counts = queue.counts()
        oldest = queue.oldest_pending()
        state = read_status(archive.root, route_name)
        rows.append(
            {
                "type": "route",
                "name": route_name,
                "to": route.to,
                **counts,
                "oldest_pending_s": round(now - oldest, 1) if oldest else None,
                "auth": auth_of(route),
                "auth_file": route.token_file or route.password_file,  # its path, never its content
                "down": state.get("down", ""),
                "down_cause": state.get("cause"),
                "next_try_s": round(max(0.0, state["next_try"] - now), 1) if "next_try" in state else None,
            }
        )
        dead.extend({"type": "dead", "route": route_name, **e.record()} for e in queue.dead())
    return rows, dead


def retry_route(archive: Archive, name: str) -> int:
    """Queue a route's dead letters again; returns how many."""
    if name not in archive.config.routes:
        raise UsageError(f"no route named {name!r}", hint="see `pacsctl route list`")
    return RouteQueue(archive.root, name).retry_dead()
