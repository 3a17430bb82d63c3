"""Paper figures: what each figure draws (lines, points, colours per method), the Pareto front, the files."""

from __future__ import annotations

import itertools
import logging
import math
import re

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from matplotlib.lines import Line2D

from prunebench.cli import main
from prunebench.registry import list_methods
from prunebench.report import leaderboard
from prunebench.report.example import example_records, write_example_store
from prunebench.report.plots import (
    DOUBLE_COLUMN_IN,
    METHOD_STYLES,
    SINGLE_COLUMN_IN,
    budget_curves,
    choose_published,
    method_style,
    method_styles,
    pareto_front,
    pareto_plot,
    relacc_heatmap,
    save_figure,
    styles_for,
)
from prunebench.report.published import published_table
from prunebench.store import ResultStore

PRUNED = ["fastv", "my_plugin", "random", "visionzip"]


@pytest.fixture()
def df(tmp_path):
    return leaderboard(write_example_store(tmp_path / "run_a"))


def same_colour(a, b) -> bool:
    return np.allclose(to_rgba(a), to_rgba(b))


def all_font_sizes(fig):
    return [t.get_fontsize() for t in fig.findobj(matplotlib.text.Text) if t.get_text()]


def series(ax) -> dict[str, Line2D]:
    """The labelled lines of an axis (crosses of lost budgets and other helpers start with '_')."""
    return {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}


def test_pareto_front_hand_made():
    # (cost, accuracy): lower cost and higher accuracy are better
    points = [(1.0, 50.0), (2.0, 70.0), (2.0, 60.0), (3.0, 65.0), (4.0, 90.0), (0.5, 40.0), (4.0, 90.0), (5.0, float("nan"))]
    assert pareto_front(points) == [5, 0, 1, 4]
    assert pareto_front([]) == []
    assert pareto_front([(1.0, 1.0)]) == [0]


def test_method_colours_are_fixed_per_name():
    a = method_styles(["visionzip", "fastv", "none"])
    b = method_styles(["fastv"], extra=["vispruner", "divprune", "zzz"])
    assert a["fastv"] == b["fastv"] == method_style("fastv")  # whatever else is shown
    assert a["none"]["color"] == "black" and a["none"]["marker"] == "*"
    assert method_style("my_plugin") == method_style("my_plugin")  # unknown names: from a hash, stable
    assert method_style("my_plugin")["marker"] != "*"
    # every registered method has its own colour and marker
    registered = [m for m in list_methods()]
    assert set(registered) <= set(METHOD_STYLES)
    assert len({METHOD_STYLES[m][0] for m in registered}) == len(registered)
    assert len({METHOD_STYLES[m][1] for m in registered}) == len(registered)
    # no two names share colour and marker; the star is the unpruned model's only
    assert len(set(METHOD_STYLES.values())) == len(METHOD_STYLES)
    assert all(marker != "*" for _, marker in METHOD_STYLES.values())
    # within every shipped published table, no two methods share a colour
    t = published_table()
    for _, table in t.groupby(["paper", "table", "model"]):
        methods = sorted(set(table["method_key"]) - {"none"})
        assert set(methods) <= set(METHOD_STYLES), methods
        colours = [METHOD_STYLES[m][0] for m in methods]
        assert len(set(colours)) == len(colours), methods


def test_budget_curves_lines_per_method_and_baseline(df):
    fig = budget_curves(df)
    styles = styles_for(df)
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["shapes_count", "shapes_color", "RelAcc (%)"]
    assert fig.get_size_inches()[0] == pytest.approx(DOUBLE_COLUMN_IN)
    for ax in axes:
        lines = series(ax)
        assert set(lines) - {"failed / infeasible"} == {"FastV", "my_plugin", "Random", "VisionZip", "Unpruned"}
        for method, label in zip(PRUNED, ["FastV", "my_plugin", "Random", "VisionZip"]):
            assert same_colour(lines[label].get_color(), styles[method]["color"])
            assert lines[label].get_marker() == styles[method]["marker"]
        assert list(lines["FastV"].get_xdata()) == [8, 16, 32]  # the infeasible budget leaves a gap
        assert math.isnan(lines["FastV"].get_ydata()[0])
        assert lines["Unpruned"].get_linestyle() == ":"  # dotted
    relacc = series(axes[2])
    assert list(relacc["VisionZip"].get_ydata()[1:]) == pytest.approx([87.5, 95.0])
    assert list(relacc["Unpruned"].get_ydata()) == [100.0, 100.0]  # the horizontal baseline
    count = series(axes[0])
    assert list(count["Unpruned"].get_ydata()) == [0.8, 0.8]
    assert axes[0].get_ylabel() == "score" and axes[2].get_ylabel() == "RelAcc (%)"
    assert "failed / infeasible" in fig.legends[0].get_texts()[-1].get_text()  # the cross is explained once
    assert min(all_font_sizes(fig)) >= 7


def test_budget_curves_mark_failed_and_infeasible_budgets(df):
    ax = budget_curves(df, panels=["relacc"]).axes[0]
    crosses = [line for line in ax.get_lines() if line.get_label() == "_lost"]
    # FastV @8 infeasible and VisionZip @8 failed: two crosses at budget 8, stacked, in their series' colours
    assert sorted(float(c.get_xdata()[0]) for c in crosses) == [8.0, 8.0]
    assert len({float(c.get_ydata()[0]) for c in crosses}) == 2
    styles = styles_for(df)
    assert {tuple(np.round(to_rgba(c.get_color()), 3)) for c in crosses} == {tuple(np.round(to_rgba(styles[m]["color"]), 3)) for m in ("fastv", "visionzip")}
    assert all(c.get_marker() == "x" for c in crosses)


def test_variants_of_one_method_are_separate_series(tmp_path):
    """Two parameter sets and two budget modes of VisionZip in one run: three lines, never one zig-zag."""
    store = ResultStore(tmp_path / "r")
    records = [r for r in example_records() if r["method"] in ("none", "visionzip") and r["status"] == "done"]
    for record in records:
        store.put(record)
    for record in records[1:]:
        store.put(dict(record, key=record["key"] + "p", method_params={"dominant": 54}, relacc=0.5))
        store.put(dict(record, key=record["key"] + "m", budget_mode="final", relacc=0.4))
    df = leaderboard(store)
    ax = budget_curves(df, panels=["relacc"]).axes[0]
    lines = series(ax)
    names = {"VisionZip (average) (dominant=default)", "VisionZip (average) (dominant=54)", "VisionZip (final)"}
    assert names <= set(lines)
    for name in names:
        assert list(lines[name].get_xdata()) == [16, 32]  # one point per budget
    assert list(lines["VisionZip (average) (dominant=54)"].get_ydata()) == [50.0, 50.0]
    assert list(lines["VisionZip (final)"].get_ydata()) == [40.0, 40.0]
    colours = [to_rgba(lines[n].get_color()) for n in sorted(names)]
    assert len({tuple(np.round(c, 3)) for c in colours}) == 3  # shades of VisionZip's colour tell them apart
    pareto = series(pareto_plot(df, "kv_mb").axes[0])
    assert names <= set(pareto)


def test_published_points_are_hollow_and_name_their_source(tmp_path):
    df = leaderboard(write_example_store(tmp_path / "r"), with_published=True, published_source="VisPruner (arXiv 2412.01818v2+) Table 1")
    fig = budget_curves(df, panels=["relacc"])
    ax = fig.axes[0]
    pubs = {name: line for name, line in series(ax).items() if name.endswith("(VisPruner T1)")}
    assert set(pubs) == {
        "FastV (VisPruner T1)",
        "SparseVLM (VisPruner T1)",
        "VisionZip (VisPruner T1)",
        "VisPruner (VisPruner T1)",
        "ToMe (VisPruner T1)",
        "PruMerge+ (VisPruner T1)",
    }
    assert all(line.get_fillstyle() == "none" and line.get_linestyle() == "None" for line in pubs.values())
    styles = styles_for(df)
    fastv = pubs["FastV (VisPruner T1)"]
    assert same_colour(fastv.get_color(), styles["fastv"]["color"])  # the colour of the measured FastV line
    assert sorted(fastv.get_xdata()) == [32, 64, 128]
    assert sorted(fastv.get_ydata()) == [64.1, 75.9, 85.4]
    assert same_colour(series(ax)["FastV"].get_color(), styles["fastv"]["color"])
    assert fig.legends and ax.get_legend() is None  # the legend sits outside the axes


def test_figures_show_one_published_source_unless_asked(tmp_path, caplog):
    df = leaderboard(write_example_store(tmp_path / "r"), with_published=True)
    assert df.loc[df["source"] != "measured", "source"].nunique() > 5
    with caplog.at_level(logging.WARNING):
        one = choose_published(df)
    shown = set(one.loc[one["source"] != "measured", "source"])
    assert len(shown) == 1 and "--published-source" in caplog.text
    # the default shares most methods with the runs (FastV, VisionZip) and has fewest others: VisionZip's Table 1
    assert shown == {"published: VisionZip (arXiv 2412.04467v1) Table 1"}
    assert one["source"].eq("measured").sum() == 10
    assert choose_published(df, "all")["source"].nunique() == df["source"].nunique()
    assert set(choose_published(df, "DART (arXiv 2502.11494, EMNLP version) Table 1")["source"]) == {
        "measured",
        "published: DART (arXiv 2502.11494, EMNLP version) Table 1",
    }
    with pytest.raises(ValueError, match="available"):
        choose_published(df, "no such paper")


def test_pareto_plot_points_and_front(df):
    fig = pareto_plot(df, "tflops")
    ax = fig.axes[0]
    styles = styles_for(df)
    assert fig.get_size_inches()[0] == pytest.approx(SINGLE_COLUMN_IN)
    points = series(ax)
    assert set(points) == {"FastV", "my_plugin", "Random", "VisionZip", "Unpruned", "Pareto front"}
    assert len(points["FastV"].get_xdata()) == 2 and len(points["my_plugin"].get_xdata()) == 1
    for method, label in zip(PRUNED, ["FastV", "my_plugin", "Random", "VisionZip"]):
        assert same_colour(points[label].get_color(), styles[method]["color"])
        assert points[label].get_marker() == styles[method]["marker"]
    front = points["Pareto front"]
    # VisionZip@16 (0.6 T, 87.5 %), VisionZip@32 (0.8 T, 95 %), unpruned (2 T, 100 %)
    assert list(front.get_xdata()) == pytest.approx([0.6, 0.8, 2.0])
    assert list(front.get_ydata()) == pytest.approx([87.5, 95.0, 100.0])
    assert fig.legends and ax.get_legend() is None
    assert min(all_font_sizes(fig)) >= 7
    with pytest.raises(ValueError, match="cost must be one of"):
        pareto_plot(df, "watts")


def test_pareto_warns_about_published_rows_without_the_cost(tmp_path, caplog):
    df = leaderboard(write_example_store(tmp_path / "r"), with_published=True, published_source="VisPruner (arXiv 2412.01818v2+) Table 1")
    with caplog.at_level(logging.WARNING):
        ax = pareto_plot(df, "kv_mb").axes[0]
    assert "published row(s) of VisPruner T1 lack kv_mb" in caplog.text
    assert not any(name.endswith("(VisPruner T1)") for name in series(ax))


def test_pareto_latency_axis_names_time_to_first_token(tmp_path):
    store = ResultStore(tmp_path / "r")
    for record in example_records():
        if record["status"] == "done":
            record["latency_ms"]["ttft"] = {"median": record["latency_ms"]["prefill"]["median"] + 1.0, "p90": 0.0}
        store.put(record)
    ax = pareto_plot(leaderboard(store), "prefill_ms").axes[0]
    assert ax.get_xlabel() == "Time to first token (ms, median)"  # p90 below the median here: no bars
    assert sorted(series(ax)["VisionZip"].get_xdata()) == [6.5, 7.0]


def test_relacc_heatmap_is_a_series_by_budget_grid(df):
    fig = relacc_heatmap(df)
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["RelAcc (mean over tasks)", "shapes_count", "shapes_color"]
    assert fig.get_size_inches()[0] == pytest.approx(DOUBLE_COLUMN_IN) and fig.get_size_inches()[1] < 8.5
    ax = axes[1]
    labels = [t.get_text() for t in axes[0].get_yticklabels()]
    assert labels == ["FastV", "Random", "VisionZip", "my_plugin"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["8", "16", "32"]
    data = np.ma.filled(ax.collections[0].get_array(), np.nan).reshape(len(labels), 3)
    row = dict(zip(labels, data))
    assert row["VisionZip"][1:] == pytest.approx([85.0, 95.0])  # 0.68 / 0.80, 0.76 / 0.80
    assert row["Random"][1:] == pytest.approx([50.0, 75.0])
    assert np.isnan(row["FastV"][0]) and np.isnan(row["Random"][0])
    crosses = [t for t in ax.texts if t.get_text() == "×"]
    assert sorted((t.get_position()[0], t.get_position()[1]) for t in crosses) == [(0.5, 0.5), (0.5, 2.5)]  # FastV@8, VisionZip@8
    assert min(all_font_sizes(fig)) >= 7
    assert relacc_heatmap(df, width="single").get_size_inches()[0] == pytest.approx(SINGLE_COLUMN_IN)


def test_figures_are_written_as_png_and_pdf(df, tmp_path):
    paths = save_figure(pareto_plot(df, "kv_mb"), tmp_path / "figs", "pareto_kv_mb", dpi=60)
    assert [p.name for p in paths] == ["pareto_kv_mb.png", "pareto_kv_mb.pdf"]
    assert paths[0].read_bytes().startswith(b"\x89PNG") and paths[1].read_bytes().startswith(b"%PDF")


def test_plot_command(tmp_path, capsys):
    a = write_example_store(tmp_path / "reference")
    b = write_example_store(tmp_path / "mine", scale=0.9)
    assert main(["plot", str(a.root), str(b.root), "-o", str(tmp_path / "out"), "--formats", "png", "--dpi", "60", "--width", "single"]) == 0
    printed = sorted(p.rsplit("/", 1)[-1] for p in capsys.readouterr().out.split())
    assert printed == ["budget_curves.png", "pareto_kv_mb.png", "pareto_prefill_ms.png", "pareto_tflops.png", "relacc_heatmap.png"]
    assert (tmp_path / "out" / "pareto_tflops.png").stat().st_size > 2000
    assert main(["plot", str(a.root), "--width", "wide"]) == 2
    assert "--width" in capsys.readouterr().err


def test_two_runs_share_method_colours_and_differ_in_style(tmp_path):
    df = leaderboard([write_example_store(tmp_path / "reference"), write_example_store(tmp_path / "mine", scale=0.9)])
    ax = budget_curves(df, panels=["relacc"]).axes[0]
    lines = series(ax)
    assert same_colour(lines["FastV [mine]"].get_color(), lines["FastV [reference]"].get_color())
    assert lines["FastV [mine]"].get_linestyle() != lines["FastV [reference]"].get_linestyle()
    assert lines["FastV [mine]"].get_fillstyle() != lines["FastV [reference]"].get_fillstyle()
    assert not same_colour(lines["FastV [mine]"].get_color(), lines["VisionZip [mine]"].get_color())
    assert lines["Unpruned [mine]"].get_linestyle() != lines["Unpruned [reference]"].get_linestyle()
    pareto = series(pareto_plot(df, "prefill_ms").axes[0])
    assert same_colour(pareto["FastV [mine]"].get_color(), lines["FastV [mine]"].get_color())
    assert pareto["FastV [mine]"].get_fillstyle() != pareto["FastV [reference]"].get_fillstyle()
    assert "none" not in {pareto[n].get_fillstyle() for n in pareto}  # hollow stays the mark of published numbers


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
    assert sorted(series(ax)["VisionZip"].get_ydata()) == [80.0, 90.0]


# ---------------------------------------------------------------------------------------------------------
# figures a paper can use as they are


def _realistic(tmp_path):
    """A toy-sized run: TFLOPs around 0.0005 (GFLOPs on the axis), latencies of 12-30 ms with one 2053 ms sample of
    a loaded machine, p90s, and a task every cell answers perfectly (a flat panel)."""
    store = ResultStore(tmp_path / "toy")
    for i, record in enumerate(example_records(model="toy-llava")):
        if record["status"] == "done":
            budget = record["budget"] or 64
            record["flops"] = {"measured_tflops": 0.0002 + budget * 0.00001}
            median = 2053.0 if (record["method"], record["budget"]) == ("random", 16) else 12.0 + budget * 0.5 + i
            record["latency_ms"] = {"ttft": {"median": median, "p90": median * 1.2, "n": 8}}
            record["tasks"]["shapes_count"]["score"] = 1.0
            record["tasks"]["shapes_count"]["baseline"] = 1.0
        store.put(record)
    return leaderboard(store)


def _figures(df, width):
    yield "budget_curves", budget_curves(df, width=width)
    for cost in ("prefill_ms", "tflops", "kv_mb"):
        yield f"pareto_{cost}", pareto_plot(df, cost, width=width)
    yield "relacc_heatmap", relacc_heatmap(df, width=width)


def _overlaps(labels) -> list[tuple[str, str]]:
    boxes = sorted(((t.get_window_extent(), t.get_text()) for t in labels if t.get_visible() and t.get_text()), key=lambda b: b[0].x0)
    return [(a[1], b[1]) for a, b in itertools.pairwise(boxes) if a[0].overlaps(b[0])]


@pytest.mark.parametrize("width", ["single", "double"])
def test_figures_have_readable_ticks_and_fonts_at_both_widths(tmp_path, width):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    df = _realistic(tmp_path)
    for name, fig in _figures(df, width):
        FigureCanvasAgg(fig)
        fig.canvas.draw()
        assert fig.get_size_inches()[0] == pytest.approx(3.5 if width == "single" else 7.0)
        for ax in fig.axes:
            if not ax.get_visible():
                continue
            for axis in ("x", "y"):
                ticks = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
                if axis == "y":  # stacked vertically: compare heights
                    boxes = sorted(((t.get_window_extent(), t.get_text()) for t in ticks if t.get_visible() and t.get_text()), key=lambda b: b[0].y0)
                    bad = [(a[1], b[1]) for a, b in itertools.pairwise(boxes) if a[0].overlaps(b[0])]
                else:
                    bad = _overlaps(ticks)
                assert not bad, (name, width, axis, bad)
                numbers = [t.get_text() for t in ticks if re.fullmatch(r"[−\-]?[\d.]+", t.get_text())]
                assert all(len(t) <= 5 for t in numbers), (name, numbers)  # scaled units: no "0.00060"
            assert not ax.xaxis.get_offset_text().get_text() and not ax.yaxis.get_offset_text().get_text(), name
        if width == "single":
            small = [(t.get_text(), t.get_fontsize()) for t in fig.findobj(matplotlib.text.Text) if t.get_text() and t.get_visible() and t.get_fontsize() < 7]
            assert not small, (name, small)


def test_palette_has_contrast_on_white():
    from prunebench.report.plots import PALETTE

    def luminance(colour):
        channels = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in to_rgba(colour)[:3]]
        return 0.2126 * channels[0] + 0.7152 * channels[1] + 0.0722 * channels[2]

    ratios = [1.05 / (luminance(c) + 0.05) for c in PALETTE]
    assert min(ratios) >= 2.3, ratios  # seaborn's light pink (1.7:1) and yellow (1.4:1) are out
    assert len({tuple(np.round(c, 3)) for c in PALETTE}) == len(PALETTE)


def test_a_method_keeps_its_style_in_any_subset(tmp_path):
    df = _realistic(tmp_path)
    full = series(budget_curves(df, panels=["relacc"]).axes[0])
    part = series(budget_curves(df[df["method"].isin(["none", "visionzip"])], panels=["relacc"]).axes[0])
    for attr in ("get_color", "get_marker", "get_linestyle"):
        assert getattr(full["VisionZip"], attr)() == getattr(part["VisionZip"], attr)()
    # overlapping curves stay apart: every pair of methods differs in marker and, for most, in dash
    for trio in (("random", "visionzip", "vispruner"), ("fastv", "sparsevlm", "divprune")):  # the defaults; the papers' usual set
        styles = [method_style(m) for m in trio]
        assert len({s["marker"] for s in styles}) == 3 and len({str(s["linestyle"]) for s in styles}) == 3, trio


def test_pareto_points_carry_their_budget_and_latency_is_robust(tmp_path):
    df = _realistic(tmp_path)
    fig = pareto_plot(df, "prefill_ms")
    ax = fig.axes[0]
    budgets = sorted(t.get_text() for t in ax.texts if t.get_text().isdigit())
    assert budgets.count("32") == 4 and budgets.count("16") == 2  # every plotted pruned point but the outlier
    assert ax.get_xlim()[1] < 100  # the 2053 ms outlier does not squash the 12-30 ms points
    assert any("2053 ms" in t.get_text() for t in ax.texts)  # ... it is drawn at the edge with its value
    assert any(c.get_label() == "_p90" for c in ax.containers)  # p90 bars
    assert ax.get_xlabel() == "Time to first token (ms, median; bar: p90)"
    tflops = pareto_plot(df, "tflops").axes[0]
    assert tflops.get_xlabel() == "Prefill GFLOPs"
    assert max(series(tflops)["VisionZip"].get_xdata()) == pytest.approx(0.52)  # 0.00052 TFLOPs


def test_flat_panel_starts_at_zero(tmp_path):
    df = _realistic(tmp_path)
    fig = budget_curves(df, panels=["shapes_count"])
    lo, hi = fig.axes[0].get_ylim()
    assert lo == 0.0 and 1.0 < hi <= 1.15  # not 0.96-1.04


def test_robust_limits():
    from prunebench.report.plots import robust_limits

    lo, hi, out = robust_limits([12, 14, 15, 18, 22, 30, 2053])
    assert (lo, hi) == (12, 30) and list(out) == [False] * 6 + [True]
    lo, hi, out = robust_limits([10, 20, 40, 80])
    assert (lo, hi) == (10, 80) and not out.any()
