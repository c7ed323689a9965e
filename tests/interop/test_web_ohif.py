"""The real OHIF viewer (npm `@ohif/app`, its built `dist/` served as static files, with an
`app-config.js` pointing at pacsctl's /dicom-web) in headless Chromium: it lists the archive's
studies and displays a CT image. `.ci/run` puts the pinned package in `.ci/cache/ohif/`
(`PACSCTL_OHIF_DIST` names another `dist/`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageStat

from tests.helpers import REPO_ROOT, free_port, missing_peer, require_tool
from tests.web.conftest import WebNode, fill_archive, start_web_node

CHROMIUM = "/usr/bin/chromium"
OHIF_DIST = Path(os.environ.get("PACSCTL_OHIF_DIST", REPO_ROOT / ".ci/cache/ohif/package/dist"))

# What README's "OHIF" section says to put into app-config.js: the data source, and (OHIF
# without an OIDC login sends no Authorization header) the token added to pacsctl's requests.
APP_CONFIG = """(function () {
  const root = '%(root)s', token = '%(token)s';
  const open = XMLHttpRequest.prototype.open, send = XMLHttpRequest.prototype.send;
  XMLHttpRequest.prototype.open = function (method, url, ...rest) {
    this._toPacsctl = String(url).startsWith(root);
    return open.call(this, method, url, ...rest);
  };
  XMLHttpRequest.prototype.send = function (...args) {
    if (this._toPacsctl) this.setRequestHeader('Authorization', 'Bearer ' + token);
    return send.apply(this, args);
  };
  const plainFetch = window.fetch;
  window.fetch = function (input, init = {}) {
    const url = typeof input === 'string' ? input : input.url;
    if (String(url).startsWith(root)) {
      init = { ...init, headers: new Headers(init.headers || (typeof input === 'string' ? {} : input.headers)) };
      init.headers.set('Authorization', 'Bearer ' + token);
    }
    return plainFetch.call(this, input, init);
  };
})();
window.config = {
  routerBasename: '/', extensions: [], modes: [], showStudyList: true, maxNumberOfWebWorkers: 1,
  showWarningMessageForCrossOrigin: false, showCPUFallbackMessage: false,
  defaultDataSourceName: 'pacsctl',
  dataSources: [{
    namespace: '@ohif/extension-default.dataSourcesModule.dicomweb', sourceName: 'pacsctl',
    configuration: {
      friendlyName: 'pacsctl', name: 'pacsctl',
      wadoUriRoot: '%(root)s', qidoRoot: '%(root)s', wadoRoot: '%(root)s',
      qidoSupportsIncludeField: true, imageRendering: 'wadors', thumbnailRendering: 'wadors',
      enableStudyLazyLoad: true, supportsFuzzyMatching: true, supportsWildcard: true,
      bulkDataURI: { enabled: true }, omitQuotationForMultipartRequest: true,
    },
  }],
};
"""


def _static_app(dist: Path, config: str):  # noqa: ANN202 - a starlette app
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import FileResponse, Response
    from starlette.routing import Route

    async def serve(request: Request) -> Response:
        path = request.url.path.lstrip("/")
        if path == "app-config.js":
            return Response(config, media_type="text/javascript")
        target = (dist / path).resolve()
        if path and target.is_file() and dist.resolve() in target.parents:
            return FileResponse(target)
        return FileResponse(dist / "index.html")  # the single-page app's own routes

    return Starlette(routes=[Route("/{path:path}", serve)])


@pytest.fixture(scope="module")
def ohif(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, WebNode]]:
    """OHIF on one loopback port, pacsctl (allowing OHIF's origin) on another."""
    import uvicorn

    if not (OHIF_DIST / "index.html").is_file():
        missing_peer(f"OHIF's dist/ not found at {OHIF_DIST} (.ci/run fetches @ohif/app)")
    base = tmp_path_factory.mktemp("ohif")
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    uids = fill_archive(base / "archive", base / "input")
    node = start_web_node(base / "archive", base / "logs", "--web-cors", origin)
    node.uids = uids
    config = APP_CONFIG % {"root": node.dicomweb, "token": node.token()}
    server = uvicorn.Server(uvicorn.Config(_static_app(OHIF_DIST, config), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield origin, node
    server.should_exit = True
    thread.join(10)
    node.serve.stop(timeout=20)


def _chromium(url: str, *args: str) -> str:
    binary = require_tool(CHROMIUM)
    result = subprocess.run(
        [binary, "--headless", "--no-sandbox", "--enable-unsafe-swiftshader", "--use-angle=swiftshader",
         "--no-first-run", "--virtual-time-budget=60000", "--window-size=1400,900", *args, url],
        capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_ohif_lists_the_archive_and_displays_a_ct_image(ohif: tuple[str, WebNode], tmp_path: Path) -> None:
    origin, node = ohif
    dom = _chromium(origin + "/", "--dump-dom")
    assert "DOE, JANE" in dom and "ROE, RICHARD" in dom  # OHIF writes names "FAMILY, GIVEN"
    assert re.search(r"1-3 of 3", dom), "the study list should count the archive's 3 studies"

    shot = tmp_path / "viewer.png"
    _chromium(f"{origin}/viewer?StudyInstanceUIDs={node.uids['S1']}", f"--screenshot={shot}")
    image = Image.open(shot).convert("L")
    width, height = image.size
    viewport = image.crop((width // 3, height // 4, width * 2 // 3, height * 3 // 4))  # its middle
    assert ImageStat.Stat(viewport).stddev[0] > 40, "no CT image drawn in OHIF's viewport"
    records = [json.loads(line) for line in (node.archive / "audit.log").read_text().splitlines()]
    pixels = [r for r in records if r.get("event") == "web" and "/frames/" in r.get("path", "")]
    assert pixels and all(r["status"] == "200" for r in pixels)
