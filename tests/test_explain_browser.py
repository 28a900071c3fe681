"""The explain page in headless Chromium: a laptop-width screenshot that is not blank, and every
figure decoded by the browser. Skips, saying why, where no Chromium is installed (.ci/run installs one)."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

import graphprune
from graphprune.data import load_data
from graphprune.explain import explain

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=5000")
COUNT_IMAGES = ('<script>window.addEventListener("load",function(){document.title="images:"+Array.from(document.images)'
                '.filter(function(i){return i.complete&&i.naturalWidth>0}).length+"/"+document.images.length})</script>')


def _browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no headless Chromium installed (apt-get install chromium; .ci/run does it)")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    _browser()  # skip before building anything
    folder = tmp_path_factory.mktemp("page")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()
    pruned, _ = graphprune.shrink(model, torch.randn(2, 8), ratio=0.5, round_to=1)
    np.savez(folder / "t.npz", x=np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32), y=np.arange(40) % 4)
    out = folder / "report.html"
    explain(model, pruned, load_data(str(folder / "t.npz"), torch.randn(2, 8)), samples=3, out=out)
    return out


def _run(browser: str, *args: str) -> str:
    done = subprocess.run([browser, *FLAGS, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_page_screenshot_at_laptop_width_is_not_blank(page):
    import matplotlib.image

    browser = _browser()
    shot = page.with_suffix(".png")
    _run(browser, "--window-size=1366,768", f"--screenshot={shot}", page.as_uri())
    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (768, 1366)
    colours = np.unique((pixels.reshape(-1, 3) * 255).astype(np.uint8), axis=0)
    assert pixels.std() > 0.05 and len(colours) > 50  # text and charts, not a white page


def test_every_figure_decodes_in_the_browser(page):
    browser = _browser()
    probe = page.with_name("probe.html")
    html = page.read_text()
    probe.write_text(html.replace("</body>", COUNT_IMAGES + "</body>"))
    title = re.search(r"<title>images:(\d+)/(\d+)</title>", _run(browser, "--dump-dom", probe.as_uri()))
    assert title, "the page did not load"
    loaded, total = map(int, title.groups())
    assert total == html.count("<img ") and total >= 4 and loaded == total
