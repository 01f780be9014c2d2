"""The HTML report, built from synthetic records written in the store's format (no training)."""

from __future__ import annotations

import base64
import re
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bench.report import FIGURES, build_index, build_report
from bench.report.stats import spread
from bench.report.synthetic import write_synthetic_study
from bench.study import load_studies
from tests.conftest import built_once

STUDIES = load_studies().names()
SECTION_IDS = ("claims", "overview", "design", "figures", "results", "cost", "details", "failures", "progress", "files")
PNG = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """Collects ids, images (with their enclosing figure id), links and the text of each section."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.imgs: list[tuple[str | None, str]] = []
        self.hrefs: list[str] = []
        self.figure: str | None = None
        self.section: str | None = None
        self.text: dict[str, list[str]] = {}
        self.svgs: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(str(a["id"]))
        if tag == "section":
            self.section = a.get("id")
        if tag == "figure" and a.get("id"):
            self.figure = a.get("id")
        if tag == "img":
            self.imgs.append((self.figure, a.get("src") or ""))
        if tag == "svg":
            self.svgs.append(self.figure)
        if tag == "a" and a.get("href"):
            self.hrefs.append(str(a["href"]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure":
            self.figure = None

    def handle_data(self, data: str) -> None:
        if self.section:
            self.text.setdefault(self.section, []).append(data)


def parse(path: Path) -> Page:
    p = Page()
    p.feed(path.read_text())
    return p


def decode_png(src: str) -> bytes:
    assert src.startswith("data:image/png;base64,"), src[:40]
    data = base64.b64decode(src.split(",", 1)[1], validate=True)
    assert data.startswith(PNG) and len(data) > 200
    return data


def _build(root: Path) -> None:
    """Every registered study with finished records (two seeds, one failed and one diverged cell),
    and the residual study's quick profile half-way (running and pending cells); their reports and
    indexes."""
    t = time.perf_counter()
    for i, name in enumerate(STUDIES):
        write_synthetic_study(root, name, "smoke", seeds=(0, 1), cuda=(i % 2 == 0))
    write_synthetic_study(root / "running", "residual", "quick", seeds=(0, 1, 2), failed=1, diverged=0,
                          running=2, pending=5, artifacts=False)
    for name in STUDIES:
        build_report(name, root)
    build_report("residual", root / "running")
    build_index(root)
    build_index(root / "running")
    print(f"built {len(STUDIES) + 1} reports in {time.perf_counter() - t:.1f}s")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The records and reports of :func:`_build`, built once for all workers (the tests only read them)."""
    return built_once(tmp_path_factory, "report-results", _build)


@pytest.fixture(scope="module")
def reports(results: Path) -> dict[str, Path]:
    out = {name: results / name / "report.html" for name in STUDIES}
    out["running/residual"] = results / "running" / "residual" / "report.html"
    assert all(p.is_file() for p in out.values()), out
    return out


def test_spread() -> None:
    s = spread([1.0, 2.0, 3.0, float("nan"), None])
    assert s.n == 3 and s.mean == pytest.approx(2.0) and s.std == pytest.approx(1.0)
    assert s.lo == pytest.approx(2.0 - 4.3026527 / np.sqrt(3)) and s.hi is not None
    one = spread([5.0])
    assert one.n == 1 and one.lo is None and one.fmt() == "5.00" and one.fmt_ci() == "—"
    assert spread([]).fmt() == "—"


@pytest.mark.parametrize("study", STUDIES)
def test_report_sections_figures_tables(study: str, results: Path, reports: dict[str, Path]) -> None:
    path = reports[study]
    assert path == results / study / "report.html" and path.exists()
    html = path.read_text()
    page = parse(path)
    assert not (set(SECTION_IDS) - page.ids), f"missing sections: {set(SECTION_IDS) - page.ids}"
    assert "http://" not in html and "https://" not in html, "report must be self-contained"

    declared = load_studies().get(study).figures
    assert declared, "every study declares figures"
    for kind in declared:
        assert kind in FIGURES
        assert f"fig-{kind}" in page.ids
        imgs = [src for fig, src in page.imgs if fig == f"fig-{kind}"]
        assert imgs or f"fig-{kind}" in page.svgs, f"figure {kind} has no image"
        for src in imgs:
            decode_png(src)
    for _, src in page.imgs:  # no broken image anywhere (details included)
        decode_png(src)

    results_text = " ".join(page.text["results"])
    assert not re.search(r"\bnan\b", results_text, re.I), "nan in the results table"
    res = pd.read_csv(results / study / "results.csv")
    assert res["final_test_error_pct_mean"].notna().sum() >= len(res) - 1
    assert (res["n_ok"] >= 1).sum() >= len(res) - 1
    two = res[res["n_ok"] == 2]
    assert two["final_test_error_pct_ci95_lo"].notna().all()

    fails = pd.read_csv(results / study / "failures.csv")
    assert set(fails["status"]) == {"failed", "diverged"}
    assert "RuntimeError: synthetic failure" in " ".join(page.text["failures"])
    for name in ("results.csv", "cost.csv", "failures.csv", "cells.csv"):
        assert (results / study / name).exists()
        assert name in page.hrefs
    cost = pd.read_csv(results / study / "cost.csv")
    assert cost["params_total"].notna().all()
    assert "MACs (M, fvcore total)" in html and "peak memory (MiB)" in html
    assert 'class="arm-detail"' in html
    assert len(html) < 6_000_000, "report too large"


def test_published_and_selection(results: Path, reports: dict[str, Path]) -> None:
    res = pd.read_csv(results / "residual" / "results.csv")
    r20 = res[res["arm"] == "resnet20"].iloc[0]
    assert r20["published_value"] == pytest.approx(8.75)
    assert "ours_minus_published" not in res  # a smoke run compares nothing with the paper
    assert "He et al. 2016" in r20["published_source"]
    sel = pd.read_csv(results / "optimizers" / "selection.csv")
    assert set(sel["optimizer"]) == {"sgd", "adam", "adamw", "rmsprop"}
    assert "selection" in parse(reports["optimizers"]).ids
    assert (sel["selected on"] == "best_val_acc").all()


def test_cpu_runs_say_memory_not_measured(results: Path) -> None:
    cpu = [s for i, s in enumerate(STUDIES) if i % 2 == 1]
    html = (results / cpu[0] / "report.html").read_text()
    assert "not measured" in html


def test_running_study_shows_pending_and_running(results: Path, reports: dict[str, Path]) -> None:
    page = parse(reports["running/residual"])
    text = " ".join(page.text["progress"])
    assert "running" in text and "pending" in text
    cells = pd.read_csv(results / "running" / "residual" / "cells.csv")
    assert (cells["state"] == "running").sum() == 2
    assert (cells["state"] == "pending").sum() == 5
    assert (cells["arm_label"] != "?").all()
    assert " ".join(page.text["overview"]).count("pending: 5") == 1


def test_index_links_resolve(results: Path, reports: dict[str, Path]) -> None:
    for root in (results, results / "running"):
        index = root / "index.html"
        page = parse(index)
        links = [h for h in page.hrefs if not h.startswith("#")]
        assert links
        for href in links:
            assert (root / href).exists(), href
    assert len([h for h in parse(results / "index.html").hrefs if h.endswith("report.html")]) == len(STUDIES)
    for study, path in reports.items():  # every report's links to its CSVs and the index resolve too
        for href in parse(path).hrefs:
            if not href.startswith("#"):
                assert (path.parent / href).exists(), (study, href)


def test_unknown_figure_kind_is_a_note(tmp_path: Path) -> None:
    import json

    write_synthetic_study(tmp_path, "residual-mnist", "smoke", seeds=(0,), failed=0, diverged=0, artifacts=False)
    sj = tmp_path / "residual-mnist" / "study.json"
    desc = json.loads(sj.read_text())
    desc["figures"] = ["curves_epoch", "no_such_kind"]
    sj.write_text(json.dumps(desc))
    html = build_report("residual-mnist", tmp_path).read_text()
    assert "unknown figure kind &#39;no_such_kind&#39;: skipped" in html
    assert "no artifacts.npz" in html


def test_other_profile_records_are_left_out(tmp_path: Path) -> None:
    write_synthetic_study(tmp_path, "residual", "quick", seeds=(0,), failed=0, diverged=0, artifacts=False)
    write_synthetic_study(tmp_path, "residual", "smoke", seeds=(0,), failed=0, diverged=0, artifacts=False)
    html = build_report("residual", tmp_path).read_text()
    assert "4 of 4 cells finished" in html and "8 older record(s)" in html
    assert len(pd.read_csv(tmp_path / "residual" / "cells.csv")) == 4


def test_nothing_finished_yet(tmp_path: Path) -> None:
    write_synthetic_study(tmp_path, "optimizers", "smoke", seeds=(0,), failed=0, diverged=0, running=1, pending=3)
    page = parse(build_report("optimizers", tmp_path))
    assert not (set(SECTION_IDS) - page.ids)
    text = " ".join(page.text["progress"])
    assert "0 of 4 cells finished; 1 running, 3 pending." in text
    assert "no finished run yet" in " ".join(page.text["details"])


# ----------------------------------------------------------------- what a newcomer reads at a glance


def _edit_records(root: Path, study: str, edit: Any) -> None:
    """Change every finished record of ``study`` under ``root`` in place (``edit(summary_dict)``)."""
    import json

    for path in (root / study / "runs").glob("*/summary.json"):
        s = json.loads(path.read_text())
        edit(s)
        path.write_text(json.dumps(s))


def _section(html: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}">(.*?)</section>', html, re.S)
    assert m, sid
    return m.group(1)


def test_cpu_run_overview_shows_no_cuda(tmp_path: Path) -> None:
    """torch built with CUDA reports its version on a CPU machine too: a CPU run does not show it."""
    write_synthetic_study(tmp_path / "cpu", "residual", "smoke", seeds=(0,), failed=0, diverged=0, cuda=False,
                          artifacts=False)
    _edit_records(tmp_path / "cpu", "residual",
                  lambda s: s["environment"].update(cuda_version="13.0", cudnn_version=92400))
    overview = _section(build_report("residual", tmp_path / "cpu").read_text(), "overview")
    assert "CUDA" not in overview and "92400" not in overview and "driver" not in overview
    assert "torch" in overview
    write_synthetic_study(tmp_path / "gpu", "residual", "smoke", seeds=(0,), failed=0, diverged=0, cuda=True,
                          artifacts=False)
    assert "CUDA / cuDNN" in _section(build_report("residual", tmp_path / "gpu").read_text(), "overview")


def test_held_fixed_lists_only_settings_that_apply(reports: dict[str, Path]) -> None:
    """residual trains ResNets with SGD: no Adam betas, no aux_loss_weight (no auxiliary heads), and
    on a CPU no GPU loader; they are named as left out, not listed."""
    for study, cpu in (("residual", STUDIES.index("residual") % 2 == 1),):
        design = _section(reports[study].read_text(), "design")
        fixed = re.search(r'id="fixed-table".*?</table>', design, re.S)
        assert fixed
        keys = set(re.findall(r"<td[^>]*>([a-z_.]+)</td>", fixed.group(0)))
        assert "momentum" in keys
        assert not keys & {"betas", "aux_loss_weight"}, keys
        assert ("loader" in keys) != cpu
        left = re.search(r'id="fixed-left-out">(.*?)</p>', design, re.S)
        assert left and "betas" in left.group(1) and "aux_loss_weight" in left.group(1)


def test_held_fixed_keeps_a_setting_that_applies_to_some_arms(tmp_path: Path) -> None:
    """optimizers compares SGD with Adam, AdamW and RMSprop: betas (Adam's) apply to some arms, so
    they stay; aux_loss_weight applies to none."""
    from bench.report.data import config_difference, load
    from bench.report.tables import applicable_settings

    write_synthetic_study(tmp_path, "optimizers", "smoke", seeds=(0,), failed=0, diverged=0, artifacts=False)
    d = load("optimizers", tmp_path)
    _, fixed = config_difference(d)
    assert {"betas", "aux_loss_weight"} <= set(fixed)
    kept, left_out = applicable_settings(d, fixed)
    assert "betas" in kept
    assert "aux_loss_weight" in left_out and "aux_loss_weight" not in kept


def test_intervals_are_cut_at_the_metric_range() -> None:
    from bench.report.plotting import chance_error_pct, clipped_err
    from bench.report.tables import CLIP_MARK, ci_text

    assert ci_text(95.0, 102.85, "final_test_error_pct") == f"[95.00, 100.00]{CLIP_MARK}"
    assert ci_text(-1.5, 3.0, "final_train_error_pct") == f"[0.00, 3.00]{CLIP_MARK}"
    assert ci_text(5.0, 7.0, "final_test_error_pct") == "[5.00, 7.00]"
    assert ci_text(-2.0, 3.0, "median_epoch_time_s") == "[-2.00, 3.00]"  # no range known: as computed
    bars = clipped_err([98.0, 50.0, 1.0], [5.0, 5.0, 5.0], (0.0, 100.0))
    assert bars.tolist() == [[5.0, 5.0, 1.0], [2.0, 5.0, 5.0]]
    assert chance_error_pct(10) == 90.0 and chance_error_pct(100) == 99.0 and chance_error_pct(None) is None


def test_clipped_interval_is_marked_in_the_results_table(tmp_path: Path) -> None:
    """Two seeds far apart near 100% error: the t interval passes 100%; the table cuts and says so."""
    write_synthetic_study(tmp_path, "residual", "smoke", seeds=(0, 1), failed=0, diverged=0, artifacts=False)

    def near_chance(s: dict[str, Any]) -> None:
        if s["arm_label"] == "plain20":
            s["metrics"]["final_test_acc"] = 0.02 if s["seed"] == 0 else 0.12
    _edit_records(tmp_path, "residual", near_chance)
    html = build_report("residual", tmp_path).read_text()
    results_html = _section(html, "results")
    assert "100.00]◆" in results_html and 'id="clip-note"' in results_html
    raw = pd.read_csv(tmp_path / "residual" / "results.csv")
    assert raw.loc[raw["arm"] == "plain20", "final_test_error_pct_ci95_hi"].iloc[0] > 100  # the CSV keeps it


def test_depth_figure_shows_training_error_and_chance(reports: dict[str, Path]) -> None:
    from bench.report.data import load
    from bench.report.fig_results import error_vs_depth

    fig = error_vs_depth(load("residual", reports["residual"].parent.parent))
    assert fig.png and "Training" in fig.title and "chance (90% error)" in fig.caption
    # two panels (training | test): wider than the one-panel figure of the same kind
    import io

    from PIL import Image

    width = Image.open(io.BytesIO(base64.b64decode(fig.png))).size[0]
    assert width > 800, width


def test_curves_take_arm_colours(reports: dict[str, Path]) -> None:
    """One colour per arm in every figure: the iteration curves use the arms' colours, not depth's."""
    from matplotlib import pyplot as plt

    from bench.report.data import load
    from bench.report import fig_curves

    d = load("residual", reports["residual"].parent.parent)
    seen: list[str] = []
    real = fig_curves.mean_band

    def spy(ax: Any, df: pd.DataFrame, *a: Any, color: str, **kw: Any) -> None:
        seen.append(color)
        real(ax, df, *a, color=color, **kw)

    fig_curves.mean_band = spy  # type: ignore[assignment]
    try:
        fig_curves.curves_iter(d)
    finally:
        fig_curves.mean_band = real  # type: ignore[assignment]
        plt.close("all")
    assert seen and set(seen) <= set(d.palette.arms.values())
    assert len(set(seen)) == len({a for a in d.arm_order if a in set(d.ok["arm_label"])})


def test_cost_table_flags_timings_under_load(tmp_path: Path) -> None:
    write_synthetic_study(tmp_path, "residual", "smoke", seeds=(0,), failed=0, diverged=0, artifacts=False)
    html = build_report("residual", tmp_path).read_text()
    cost = _section(html, "cost")
    assert "not recorded" in cost and "‡" not in re.sub(r"<p.*?</p>", "", cost, flags=re.S)  # older records

    def busy(s: dict[str, Any]) -> None:
        quiet = s["arm_label"] != "plain20"
        s["measurements"].update(train_other_cpu_pct=2.0 if quiet else 45.0, infer_other_cpu_pct=1.0,
                                 train_load_avg_1min=0.5, infer_load_avg_1min=0.5, train_repeats=3,
                                 train_steps_per_repeat=1)
        s["environment"].update(other_cpu_pct=3.0, load_avg_1min=1.0, cpu_count=2)
    _edit_records(tmp_path, "residual", busy)
    build_report("residual", tmp_path)
    raw = pd.read_csv(tmp_path / "residual" / "cost.csv").set_index("arm")
    assert raw.loc["plain20", "step_runs_under_load"] == 1 and raw.loc["resnet20", "step_runs_under_load"] == 0
    assert raw.loc["plain20", "epoch_runs_under_load"] == 0
    assert (raw["step_timing_repeats"] > 0).all()
    cost = _section((tmp_path / "residual" / "report.html").read_text(), "cost")
    table = re.search(r'id="cost-table".*?</table>', cost, re.S).group(0)  # type: ignore[union-attr]
    assert table.count("‡") >= 2  # plain20's step and inference throughputs (and the load column)
    assert "steps: 1/1 runs under load" in table and "quiet" in table and "steps: 3 timed blocks" in table


def test_runs_csv_beside_the_parquet_tables(results: Path, reports: dict[str, Path]) -> None:
    runs = pd.read_csv(results / "residual" / "runs.csv")
    assert len(runs) == len(pd.read_parquet(results / "residual" / "runs.parquet"))
    assert {"run_id", "arm", "seed", "final_test_error_pct", "final_train_error_pct"} <= set(runs.columns)
    assert "runs.csv" in parse(reports["residual"]).hrefs


@pytest.mark.parametrize("kind", ["curves_iter", "error_vs_depth", "curves_epoch", "lr_grid"])
def test_legends_stay_off_the_axes(kind: str, reports: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A legend drawn beside the axes never covers a curve: its box overlaps no axes' box."""
    from matplotlib import pyplot as plt

    from bench.report import fig_cost, fig_curves, fig_results
    from bench.report.data import load
    from bench.report.figures import FIGURES

    seen: list[Any] = []

    def keep(fig: Any) -> str:
        fig.canvas.draw()
        seen.append(fig)
        return ""

    for mod in (fig_curves, fig_results, fig_cost):
        monkeypatch.setattr(mod, "to_png", keep)
    study = "residual" if kind in ("curves_iter", "error_vs_depth") else "optimizers"
    FIGURES[kind](load(study, reports[study].parent.parent))
    assert len(seen) == 1
    fig = seen[0]
    legends = [lg for ax in fig.axes if (lg := ax.get_legend()) is not None]
    assert legends, "the figure has a legend"
    for lg in legends:
        box = lg.get_window_extent()
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent()), (kind, box, ax.get_title())
    plt.close(fig)


def test_the_index_lists_studies_not_run_yet_with_how_to_run_them(tmp_path: Path) -> None:
    from bench.report import build_index

    write_synthetic_study(tmp_path, "residual-mnist", "smoke", seeds=(0,), failed=0, diverged=0, artifacts=False)
    page = build_index(tmp_path).read_text()
    for name in STUDIES:
        assert f'data-study="{name}"' in page, name
    assert page.count("not run here yet") == len(STUDIES) - 1
    assert "make ablation-residual</code>" in page and "make ablation-residual-mnist</code>" not in page
