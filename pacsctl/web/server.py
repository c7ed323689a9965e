"""Running the DICOMweb application with uvicorn until told to stop.

`serve --web-port` runs this in a process of its own (forked by the node's supervisor, see
`node.sidecar`), so HTTP requests never take the DIMSE workers' interpreter. The listening socket
is bound before the fork, so a port in use fails `serve` at once with one clear error; it stays
open in the node's keeper process, which starts a new web process on it when one dies or hangs.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from pacsctl.archive.archive import Archive
from pacsctl.web.app import WebContext, WebOptions, build_app
from pacsctl.web.metadata import Warmer

LOG = logging.getLogger(__name__)
STOP_GRACE = 5.0  # seconds open requests get to finish when the node stops
ALIVE_EVERY = 0.2  # seconds between the event loop's `alive()` calls


def bind_web_socket(options: WebOptions) -> socket.socket:
    """The web listener, bound and listening (an IPv6 host too); raises OSError."""
    family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
    # proto named: asyncio sets TCP_NODELAY on accepted sockets only when it is IPPROTO_TCP,
    # and without it a small answer on a kept-alive connection waits 40 ms for a delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((options.host, options.port))
    sock.listen(128)
    return sock


def run_web(
    root: Path,
    options: WebOptions,
    sock: socket.socket,
    should_stop: Callable[[float], bool],
    alive: Callable[[], None] | None = None,
) -> int:
    """Serve DICOMweb for the archive at `root` on `sock` until `should_stop(timeout)` says so
    (it waits up to `timeout` seconds for the stop); returns 0. `alive()` is called every
    `ALIVE_EVERY` s from the server's event loop while it serves (a blocked loop stops calling:
    the node's keeper replaces the process)."""
    import uvicorn

    archive = Archive.open(root, create=False)
    archive.index.tolerate_damage()
    ctx = WebContext(archive, options)
    ctx.warmer = Warmer(archive, ctx.cache, ctx.lock).start()  # metadata before the first request
    config = uvicorn.Config(
        build_app(ctx),
        log_level="warning",
        access_log=False,  # the audit log records every request, without query values
        ssl_certfile=options.tls_cert,
        ssl_keyfile=options.tls_key,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=int(STOP_GRACE),
        lifespan="off",
    )
    server = uvicorn.Server(config)

    async def serve() -> None:
        beating = asyncio.create_task(_call_every(ALIVE_EVERY, alive)) if alive is not None else None
        try:
            await server.serve(sockets=[sock])
        finally:
            if beating is not None:
                beating.cancel()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), name="pacsctl-web", daemon=True)
    thread.start()
    try:
        while thread.is_alive() and not should_stop(0.2):
            pass
    finally:
        server.should_exit = True
        thread.join(STOP_GRACE + 5)
        ctx.warmer.stop()
        ctx.audit.close()
        with ctx.lock:
            archive.close()
    return 0


async def _call_every(seconds: float, function: Callable[[], None]) -> None:
    while True:
        function()
        await asyncio.sleep(seconds)
