"""A real browser renders a report: headless Chromium (Debian's ``chromium`` package), no Python
browser driver. The report carries a small inline script that, on load, writes each image's decoded
and rendered size into data attributes; ``--dump-dom`` returns the DOM after that script ran."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from bench.report import build_index, build_report
from bench.report.synthetic import write_synthetic_study

pytestmark = pytest.mark.browser

STUDY = "residual"
CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser")) if p), None)
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


class Dom(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.body: dict[str, str | None] = {}
        self.imgs: list[dict[str, str | None]] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            self.body = dict(attrs)
        elif tag == "img":
            self.imgs.append(dict(attrs))
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / "chromium-profile"
    profile.mkdir(exist_ok=True)
    cmd = [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if CHROMIUM is None:
        pytest.skip("headless Chromium not found on PATH (apt-get install chromium)")
    root = tmp_path_factory.mktemp("results")
    write_synthetic_study(root, STUDY, "smoke", seeds=(0, 1, 2))
    path = build_report(STUDY, root)
    build_index(root)
    return path


def test_dom_after_load(report: Path, tmp_path: Path) -> None:
    out = chromium(tmp_path, "--virtual-time-budget=10000", "--window-size=1280,2000", "--dump-dom",
                   report.as_uri())
    assert out.returncode == 0, out.stderr[-2000:]
    dom = Dom()
    dom.feed(out.stdout)
    assert dom.title.strip() == f"{STUDY} — ablation bench report"
    assert dom.body.get("data-checked") == "1", "the page's load script did not run"
    assert dom.body.get("data-broken-images") == "0"
    assert dom.body.get("data-empty-figures") == "0"
    assert int(dom.body.get("data-images") or 0) == len(dom.imgs) > 0
    figs = [im for im in dom.imgs if "fig" in (im.get("class") or "").split()]
    assert len(figs) >= 2
    for im in figs:
        w, h = (int(v) for v in str(im.get("data-natural")).split("x"))
        rw, rh = (int(v) for v in str(im.get("data-rendered")).split("x"))
        assert w > 100 and h > 100 and rw > 100 and rh > 100, (im.get("alt"), w, h, rw, rh)
    for im in dom.imgs:  # details images too: decoded, even inside closed <details>
        assert not str(im.get("data-natural")).startswith("0x"), im.get("alt")
    assert "Uncaught" not in out.stderr, re.findall(r".*Uncaught.*", out.stderr)[:3]


@pytest.mark.slow
def test_screenshot_not_blank(report: Path, tmp_path: Path) -> None:
    from PIL import Image

    shot = tmp_path / "report.png"
    out = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars",
                   report.as_uri())
    assert out.returncode == 0, out.stderr[-2000:]
    assert shot.exists() and shot.stat().st_size > 10_000
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (2000, 1280)
    # Blank = one colour. A rendered report has text, tables and plots: many colours, varied rows.
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 200
    assert img.std() > 20


def test_index_renders(report: Path, tmp_path: Path) -> None:
    index = report.parent.parent / "index.html"
    out = chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", index.as_uri())
    assert out.returncode == 0, out.stderr[-2000:]
    assert f'href="{STUDY}/report.html"' in out.stdout


# Markup that, if the page ran it, marks the body; every kind of string the page shows is poisoned.
INJECT_IMG = "<img src=x onerror=\"document.body.setAttribute('data-injected','img')\">"
INJECT_SCRIPT = "<script>document.body.setAttribute('data-injected','script')</script>"


def _poison(root: Path) -> None:
    """Put injected markup where records carry user, record and file-system strings: class names
    (image-folder directories), --set values (data-set path, model argument), errors, arm labels."""
    from bench.store import read_json, write_json

    runs = root / STUDY / "runs"
    desc = read_json(root / STUDY / "study.json")
    desc["overrides"] = {"dataset": f"imagefolder:/data/{INJECT_SCRIPT}"}
    write_json(root / STUDY / "study.json", desc)
    for rd in sorted(runs.iterdir()):
        s = read_json(rd / "summary.json")
        for cfg in (s["config"], read_json(rd / "config.json")):
            cfg["dataset"] = f"imagefolder:/data/{INJECT_SCRIPT}"
            cfg["model_kwargs"] = {**cfg.get("model_kwargs", {}), "norm": INJECT_IMG}
        write_json(rd / "config.json", {**read_json(rd / "config.json"), "dataset": s["config"]["dataset"],
                                        "model_kwargs": s["config"]["model_kwargs"]})
        if s.get("metrics", {}).get("class_names"):
            s["metrics"]["class_names"] = [f"{INJECT_IMG}{i}" for i in range(len(s["metrics"]["class_names"]))]
            s["metrics"]["data_source"] = INJECT_SCRIPT
        if s["status"] == "failed":
            s["error"] = f"RuntimeError: {INJECT_IMG}"
        s["host"] = INJECT_IMG
        write_json(rd / "summary.json", s)


def test_injected_markup_does_not_run(tmp_path: Path) -> None:
    if CHROMIUM is None:
        pytest.skip("headless Chromium not found on PATH (apt-get install chromium)")
    root = tmp_path / "results"
    write_synthetic_study(root, STUDY, "smoke", seeds=(0, 1))
    _poison(root)
    page = build_report(STUDY, root)
    text = page.read_text()
    assert "&lt;img src=x onerror=" in text and "&lt;script&gt;" in text  # shown, as text
    out = chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    assert out.returncode == 0, out.stderr[-2000:]
    dom = Dom()
    dom.feed(out.stdout)
    assert dom.body.get("data-checked") == "1", "the page's own load script did not run"
    assert "data-injected" not in dom.body, f"injected markup ran: {dom.body.get('data-injected')}"
    assert not [im for im in dom.imgs if im.get("src") == "x"], "an injected <img> became an element"
