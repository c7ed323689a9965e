"""The viewer page at `/` of `serve --web-port`, in real headless Chromium: the study list's
text read back from the rendered DOM, a study's series thumbnails loaded, an image drawn on the
canvas (non-blank), screenshots taken."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from PIL import Image, ImageStat

from tests.helpers import require_tool
from tests.web.conftest import WebNode, web_node  # noqa: F401 - the module's node

CHROMIUM = "/usr/bin/chromium"


def _chromium(url: str, *args: str) -> str:
    binary = require_tool(CHROMIUM)
    result = subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--virtual-time-budget=15000", "--window-size=1000,800", *args, url],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_the_page_lists_studies_shows_thumbnails_and_draws_an_image(web_node: WebNode, tmp_path: Path) -> None:
    u = web_node.uids
    token = web_node.token("--study", u["S1"], "--study", u["S2"])
    page = f"{web_node.url}/?token={token}"
    dom = _chromium(page, "--dump-dom")
    rows = re.findall(r'<tr class="study-row" data-uid="([0-9.]+)">(.*?)</tr>', dom)
    assert {uid for uid, _ in rows} == {u["S1"], u["S2"]}  # the token's studies, no other
    texts = {uid: re.findall(r"<td>(.*?)</td>", cells) for uid, cells in rows}
    assert texts[u["S1"]][:3] == ["DOE JANE", "PA", "2024-01-01"] and texts[u["S1"]][-2:] == ["2", "5"]
    study = _chromium(f"{page}#study={u['S1']}", "--dump-dom")
    thumbnails = re.findall(r'<img alt="series \d+" src="blob:[^"]+" data-loaded="1">', study)
    assert len(thumbnails) == 2

    image = _chromium(f"{page}#study={u['S1']}&series={u['S1a']}", "--dump-dom")
    canvas = re.search(r'<canvas id="image" width="(\d+)" height="(\d+)"[^>]*data-lit-pixels="(\d+)"', image)
    assert canvas, image[-3000:]
    width, height, lit = (int(v) for v in canvas.groups())
    assert (width, height) == (64, 64) and lit > width * height // 10
    assert re.search(r'<span id="position">1/3</span>', image)
    shot = tmp_path / "image.png"
    _chromium(f"{page}#study={u['S1']}&series={u['S1a']}", f"--screenshot={shot}")
    assert ImageStat.Stat(Image.open(shot).convert("L")).stddev[0] > 5  # controls, text, image
