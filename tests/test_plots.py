"""Paper figures: what each figure draws (lines, points, colours per method), the Pareto front, the files."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.colors import to_rgba

from prunebench.cli import main
from prunebench.report import leaderboard
from prunebench.report.example import write_example_store
from prunebench.report.plots import (
    DOUBLE_COLUMN_IN,
    SINGLE_COLUMN_IN,
    budget_curves,
    method_styles,
    pareto_front,
    pareto_plot,
    relacc_heatmap,
    save_figure,
    styles_for,
)

PRUNED = ["fastv", "my_plugin", "random", "visionzip"]


@pytest.fixture()
def df(tmp_path):
    return leaderboard(write_example_store(tmp_path / "run_a"))


def same_colour(a, b) -> bool:
    return np.allclose(to_rgba(a), to_rgba(b))


def all_font_sizes(fig):
    return [t.get_fontsize() for t in fig.findobj(matplotlib.text.Text) if t.get_text()]


def test_pareto_front_hand_made():
    # (cost, accuracy): lower cost and higher accuracy are better
    points = [(1.0, 50.0), (2.0, 70.0), (2.0, 60.0), (3.0, 65.0), (4.0, 90.0), (0.5, 40.0), (4.0, 90.0), (5.0, float("nan"))]
    assert pareto_front(points) == [5, 0, 1, 4]
    assert pareto_front([]) == []
    assert pareto_front([(1.0, 1.0)]) == [0]


def test_method_colours_fixed_by_sorted_names():
    a = method_styles(["visionzip", "fastv", "none"])
    b = method_styles(["fastv", "visionzip"], extra=["vispruner", "fastv"])
    assert a["fastv"] == b["fastv"] and a["visionzip"] == b["visionzip"]  # published-only methods come after
    assert a["none"]["color"] == "black"
    assert len({tuple(s["color"]) for k, s in a.items() if k != "none"}) == 2
    assert a["fastv"]["marker"] != a["visionzip"]["marker"]


def test_budget_curves_lines_per_method_and_baseline(df):
    fig = budget_curves(df)
    styles = styles_for(df)
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["shapes_count", "shapes_color", "RelAcc (%)"]
    assert fig.get_size_inches()[0] == pytest.approx(DOUBLE_COLUMN_IN)
    for ax in axes:
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert set(lines) == {"FastV", "my_plugin", "Random", "VisionZip", "Unpruned"}
        for method, label in zip(PRUNED, ["FastV", "my_plugin", "Random", "VisionZip"]):
            assert same_colour(lines[label].get_color(), styles[method]["color"])
            assert lines[label].get_marker() == styles[method]["marker"]
        assert list(lines["FastV"].get_xdata()) == [8, 16, 32]  # the infeasible budget leaves a gap
        assert math.isnan(lines["FastV"].get_ydata()[0])
    relacc = {line.get_label(): line for line in axes[2].get_lines()}
    assert list(relacc["VisionZip"].get_ydata()[1:]) == pytest.approx([87.5, 95.0])
    assert list(relacc["Unpruned"].get_ydata()) == [100.0, 100.0]  # the horizontal baseline
    count = {line.get_label(): line for line in axes[0].get_lines()}
    assert list(count["Unpruned"].get_ydata()) == [0.8, 0.8]
    assert min(all_font_sizes(fig)) >= 7


def test_published_points_are_hollow(tmp_path):
    df = leaderboard(write_example_store(tmp_path / "r"), with_published=True, published_source="VisPruner (arXiv 2412.01818v2+) Table 1")
    fig = budget_curves(df, panels=["relacc"])
    ax = fig.axes[0]
    pubs = [c for c in ax.collections if isinstance(c, PathCollection) and c.get_label().endswith("(published)")]
    assert {c.get_label() for c in pubs} == {"FastV (published)", "SparseVLM (published)", "VisionZip (published)",
                                            "VisPruner (published)", "ToMe (published)", "PruMerge+ (published)"}
    for c in pubs:
        assert len(c.get_facecolors()) == 0 or np.all(c.get_facecolors()[:, 3] == 0)  # hollow
    styles = styles_for(df)
    fastv = next(c for c in pubs if c.get_label() == "FastV (published)")
    assert same_colour(fastv.get_edgecolors()[0], styles["fastv"]["color"])  # same colour as the measured FastV line
    assert sorted(fastv.get_offsets()[:, 0]) == [32, 64, 128]
    assert sorted(fastv.get_offsets()[:, 1]) == [64.1, 75.9, 85.4]
    measured = {line.get_label(): line for line in ax.get_lines()}
    assert same_colour(measured["FastV"].get_color(), styles["fastv"]["color"])


def test_pareto_plot_points_and_front(df):
    fig = pareto_plot(df, "tflops")
    ax = fig.axes[0]
    styles = styles_for(df)
    assert fig.get_size_inches()[0] == pytest.approx(SINGLE_COLUMN_IN)
    points = {c.get_label(): c for c in ax.collections if isinstance(c, PathCollection)}
    assert set(points) == {"FastV", "my_plugin", "Random", "VisionZip", "Unpruned"}
    assert len(points["FastV"].get_offsets()) == 2 and len(points["my_plugin"].get_offsets()) == 1
    for method, label in zip(PRUNED, ["FastV", "my_plugin", "Random", "VisionZip"]):
        assert same_colour(points[label].get_facecolors()[0], styles[method]["color"])
    front = next(line for line in ax.get_lines() if line.get_label() == "Pareto front")
    # VisionZip@16 (0.6 T, 87.5 %), VisionZip@32 (0.8 T, 95 %), unpruned (2 T, 100 %)
    assert list(front.get_xdata()) == pytest.approx([0.6, 0.8, 2.0])
    assert list(front.get_ydata()) == pytest.approx([87.5, 95.0, 100.0])
    assert min(all_font_sizes(fig)) >= 7
    with pytest.raises(ValueError, match="cost must be one of"):
        pareto_plot(df, "watts")


def test_relacc_heatmap_values_and_failed_rows(df):
    fig = relacc_heatmap(df)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert "FastV @8 (infeasible)" in labels and "VisionZip @8 (failed)" in labels
    assert [t.get_text() for t in ax.get_xticklabels()] == ["shapes_count", "shapes_color"]
    data = np.ma.filled(ax.collections[0].get_array(), np.nan).reshape(len(labels), 2)
    row = dict(zip(labels, data))
    assert row["VisionZip @32"] == pytest.approx([95.0, 95.0])
    assert row["Random @16"] == pytest.approx([50.0, 70.0])
    assert np.isnan(row["FastV @8 (infeasible)"]).all()
    assert min(all_font_sizes(fig)) >= 7


def test_figures_are_written_as_png_and_pdf(df, tmp_path):
    paths = save_figure(pareto_plot(df, "kv_mb"), tmp_path / "figs", "pareto_kv_mb", dpi=60)
    assert [p.name for p in paths] == ["pareto_kv_mb.png", "pareto_kv_mb.pdf"]
    assert paths[0].read_bytes().startswith(b"\x89PNG") and paths[1].read_bytes().startswith(b"%PDF")


def test_plot_command(tmp_path, capsys):
    a = write_example_store(tmp_path / "reference")
    b = write_example_store(tmp_path / "mine", scale=0.9)
    assert main(["plot", str(a.root), str(b.root), "-o", str(tmp_path / "out"), "--formats", "png", "--dpi", "60"]) == 0
    printed = sorted(p.rsplit("/", 1)[-1] for p in capsys.readouterr().out.split())
    assert printed == ["budget_curves.png", "pareto_kv_mb.png", "pareto_prefill_ms.png", "pareto_tflops.png", "relacc_heatmap.png"]
    assert (tmp_path / "out" / "pareto_tflops.png").stat().st_size > 2000


def test_two_runs_share_method_colours(tmp_path):
    df = leaderboard([write_example_store(tmp_path / "reference"), write_example_store(tmp_path / "mine", scale=0.9)])
    ax = budget_curves(df, panels=["relacc"]).axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert same_colour(lines["FastV [mine]"].get_color(), lines["FastV [reference]"].get_color())
    assert lines["FastV [mine]"].get_linestyle() != lines["FastV [reference]"].get_linestyle()
    assert not same_colour(lines["FastV [mine]"].get_color(), lines["VisionZip [mine]"].get_color())
    pareto = pareto_plot(df, "prefill_ms").axes[0]
    points = {c.get_label(): c for c in pareto.collections}
    assert same_colour(points["FastV [mine]"].get_facecolors()[0], lines["FastV [mine]"].get_color())


def test_pareto_falls_back_to_agreement_when_relacc_is_undefined(tmp_path):
    store = write_example_store(tmp_path / "r")
    for record in store.records():  # an unpruned score of 0 leaves every RelAcc undefined
        if record["status"] == "done":
            record["relacc"] = None
            for entry in record["tasks"].values():
                entry["baseline"] = 0.0
            store.put(record)
    df = leaderboard(store)
    ax = pareto_plot(df, "kv_mb").axes[0]
    assert ax.get_ylabel() == "Agreement with unpruned (%)"
    points = {c.get_label(): c for c in ax.collections}
    assert sorted(points["VisionZip"].get_offsets()[:, 1]) == [80.0, 90.0]
