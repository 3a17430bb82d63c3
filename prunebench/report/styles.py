"""Figure styles and axis helpers of :mod:`prunebench.report.plots`: figure widths, the palette, the fixed style of
every method, series grouping, axis scales and ticks, point labels and robust limits, axis titles, saving in the house style. Moved out of
:mod:`prunebench.report.plots`, which re-exports the public names."""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.ticker import FixedFormatter, FixedLocator, MaxNLocator, NullLocator, ScalarFormatter
from matplotlib.transforms import Bbox

from prunebench.report.leaderboard import MEASURED, display_name, display_units, latency_title, series_columns
from prunebench.report.published import short_source
from prunebench.store import BASELINE_METHOD

SINGLE_COLUMN_IN = 3.5
DOUBLE_COLUMN_IN = 7.0
MAX_HEIGHT_IN = 8.5  # a figure taller than this does not fit a page with its caption
MIN_FONT_PT = 7.0
# seaborn's colour-blind palette; light pink (6) and yellow (8) read poorly on white: Tol's wine and olive instead
PALETTE = tuple(to_rgb(c) for c in (*sns.color_palette("colorblind", 10).as_hex()[:6], "#882255", "#949494", "#999933", "#56b4e9"))
# then seaborn's "dark" palette for methods beyond the first ten (indices 0-9 unchanged)
PALETTE += tuple(to_rgb(c) for c in sns.color_palette("dark", 10).as_hex())
# then Tol's muted palette's teal, rose and indigo for the video methods (indices 20-22)
PALETTE += tuple(to_rgb(c) for c in ("#44aa99", "#cc6677", "#332288"))
METHOD_LINESTYLES = ("-", "--", "-.", (0, (5, 1.5, 1, 1.5, 1, 1.5)))  # solid, dashed, dash-dot, dash-dot-dot
# method -> index into METHOD_LINESTYLES, for the registered methods: methods often shown together (the defaults
# random / visionzip / vispruner; fastv / sparsevlm / visionzip of the papers' tables) get different dashes.
# Other names: from their position in METHOD_STYLES, or a hash.
METHOD_DASHES = {"visionzip": 0, "vispruner": 1, "random": 3, "fastv": 0, "sparsevlm": 1, "divprune": 2, "hiprune": 2, "learnpruner": 1, "fastervlm": 2}
BASELINE_MARKER = "*"
FALLBACK_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h", "d", "<", ">", "p", "H", "8")
FALLBACK_COLOURS = (0, 1, 2, 3, 4, 5, 6, 8, 9)  # not grey: it reads as the random baseline
# method -> (palette index, marker). Registered methods first (distinct colours and markers), then the methods
# of the shipped published tables: within every published table no two methods share a colour, and no two
# names share a (colour, marker) pair. Light colours get a darker marker edge (see _edge).
METHOD_STYLES: dict[str, tuple[int, str]] = {
    "fastv": (0, "o"),
    "sparsevlm": (1, "s"),
    "visionzip": (2, "^"),
    "vispruner": (3, "D"),
    "divprune": (4, "v"),
    "hiprune": (5, "P"),
    "learnpruner": (6, "X"),
    "random": (7, "h"),
    "fastervlm": (8, "d"),
    "pdrop": (9, "<"),
    "hiprune++": (6, "p"),
    "dart": (16, ">"),
    "tome": (4, "8"),
    "hired": (3, "H"),
    "visionzip-ft": (9, "^"),
    "mustdrop": (4, ">"),
    "prumerge": (5, "<"),
    "twigvlm": (9, "d"),
    "prumerge+": (17, "H"),
    "trim": (7, "p"),
    "globalcom2": (6, "<"),
    "no-visual-tokens": (9, "8"),
    "ficoco-v": (6, "H"),
    "visionzip*": (0, "p"),
    "cdpruner": (10, "p"),
    "vscan": (11, "8"),
    "downsample": (12, "1"),
    "pool": (13, "2"),
    "holov": (14, "3"),
    "scope": (15, "4"),
    "evs": (18, "+"),
    "vidcom2": (19, "x"),
    "fastvid": (20, "|"),
}
BASELINE_STYLE = {"color": "black", "marker": BASELINE_MARKER}
RUN_LINESTYLES = ("-", "--", "-.", (0, (1, 1)))  # one per run when several runs are combined
RUN_FILLSTYLES = ("full", "left", "bottom", "right")  # hollow ("none") is kept for published numbers
BASELINE_LINESTYLES = (":", "-.", "--", (0, (1, 3)))  # dotted for a single run
BASELINE_COLOURS = ("black", "0.45", "black", "0.45")
COST_AXES = {"prefill_ms": "Prefill latency (ms)", "tflops": "Prefill TFLOPs", "kv_mb": "KV cache (MB)"}
RC = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.title_fontsize": 7,
    "figure.titlesize": 8,
    "lines.linewidth": 1.2,
    "lines.markersize": 4.5,
    "axes.linewidth": 0.6,
    "grid.linewidth": 0.4,
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "savefig.dpi": 300,
    "savefig.bbox": "tight",
    "axes.grid": True,
    "grid.alpha": 0.4,
}


def _width(width: str | float) -> float:
    if isinstance(width, (int, float)):
        return float(width)
    try:
        return {"single": SINGLE_COLUMN_IN, "double": DOUBLE_COLUMN_IN}[width]
    except KeyError:
        try:
            return float(width)
        except ValueError:
            raise ValueError(f"width must be 'single' ({SINGLE_COLUMN_IN} in), 'double' ({DOUBLE_COLUMN_IN} in) or inches, got {width!r}") from None


def method_style(method: str) -> dict[str, object]:
    """{color, marker, linestyle} of one method name, the same in every figure (a hash of the name for unknown ones)."""
    if method == BASELINE_METHOD:
        return dict(BASELINE_STYLE, linestyle=":")
    digest = zlib.crc32(method.encode())
    if method in METHOD_STYLES:
        colour, marker = METHOD_STYLES[method]
        dash = METHOD_DASHES.get(method, list(METHOD_STYLES).index(method))
    else:
        colour = FALLBACK_COLOURS[digest % len(FALLBACK_COLOURS)]
        marker = FALLBACK_MARKERS[(digest // len(FALLBACK_COLOURS)) % len(FALLBACK_MARKERS)]
        dash = digest // (len(FALLBACK_COLOURS) * len(FALLBACK_MARKERS))
    return {"color": PALETTE[colour], "marker": marker, "linestyle": METHOD_LINESTYLES[dash % len(METHOD_LINESTYLES)]}


def method_styles(methods: Iterable[str], extra: Iterable[str] = ()) -> dict[str, dict[str, object]]:
    """method -> {color, marker} for ``methods`` and ``extra`` (each from :func:`method_style`), plus the baseline."""
    names = {BASELINE_METHOD, *methods, *extra}
    return {name: method_style(name) for name in names}


def styles_for(df: pd.DataFrame) -> dict[str, dict[str, object]]:
    return method_styles(df["method"])


def _edge(colour) -> tuple[float, float, float]:
    """A darker edge so light palette colours (yellow, light pink) stay visible on white."""
    r, g, b = to_rgb(colour)
    return (0.65 * r, 0.65 * g, 0.65 * b)


def _groups(df: pd.DataFrame):
    """Measured rows grouped per series (method, parameters, budget mode, suite, run, limit, seed), in label order;
    yields (method, run index, label, rows). The label is the leaderboard's, which names what tells series apart."""
    for method, run, _, label, group in _series(df):
        yield method, run, label, group


def _series(df: pd.DataFrame):
    """(method, run index, variant index, label, rows) per series; the variant index counts the series of one
    method within one run (parameter sets, budget modes, suites), drawn as shades of the method's colour."""
    runs = sorted(df["run"].unique())
    keys = [c for c in series_columns() if c in df.columns]
    groups = [(str(g["label"].iloc[0]), g) for _, g in df.groupby(keys, sort=False, dropna=False)]
    seen: dict[tuple, int] = {}
    for label, group in sorted(groups, key=lambda item: (item[1]["method"].iloc[0] != BASELINE_METHOD, item[0])):
        method, run = str(group["method"].iloc[0]), runs.index(group["run"].iloc[0])
        variant = seen.get((method, run), 0)
        seen[(method, run)] = variant + 1
        yield method, run, variant, label, group


VARIANT_SHADES = (1.0, 0.6, 1.45, 0.4)  # < 1 darker, > 1 lighter: a method's variants keep its hue


def _shade(colour, factor: float):
    r, g, b = to_rgb(colour)
    if factor <= 1:
        return (r * factor, g * factor, b * factor)
    t = min(1.0, factor - 1.0)
    return (r + (1 - r) * t, g + (1 - g) * t, b + (1 - b) * t)


def _log2_budget_axis(ax, budgets: Iterable[int]) -> None:
    """Budgets on a log2 axis, ticks at the budgets (or at powers of two when there are too many to label)."""
    ticks = sorted({int(b) for b in budgets if not pd.isna(b) and b > 0})
    if not ticks:
        return
    if len(ticks) > 1:
        ax.set_xscale("log", base=2)
    if len(ticks) > 6:
        lo, hi = math.floor(math.log2(ticks[0])), math.ceil(math.log2(ticks[-1]))
        ticks = [2**k for k in range(lo, hi + 1)]
    labels, last = [], None
    for t in ticks:  # label a tick only if it is far enough (on the log axis) from the last labelled one
        far = last is None or t / last >= 1.6
        labels.append(str(t) if far else "")
        last = t if far else last
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FixedFormatter(labels))


def _published_name(method: str, group: pd.DataFrame) -> str:
    """A published series' legend name: the method (prunebench's name for known methods, else the paper's own
    label) and its source, e.g. 'FastV (VisPruner T1)'."""
    name = display_name(method)
    if name == method and len(group):
        name = str(group["label"].iloc[0]).split(" (")[0]
    return f"{name} ({short_source(str(group['source'].iloc[0]))})"


def _published_groups(published: pd.DataFrame):
    """Published rows per (source, method, setting): one hollow series each."""
    setting = published["label"].str.extract(r"\((.*)\)$", expand=False).fillna("")
    for (_, method, _), group in published.assign(_setting=setting).groupby(["source", "method", "_setting"], sort=True):
        name = _published_name(method, group)
        if group["_setting"].iloc[0] and group["budget"].isna().all():
            name = name[:-1] + f", {group['_setting'].iloc[0]})"
        yield method, name, group


def _legend(fig: Figure, axes, ncol: int) -> None:
    """One legend for the figure, below the axes (outside them, so it never hides a point)."""
    handles, labels = {}, []
    for ax in np.ravel(axes):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles and not lab.startswith("_"):
                handles[lab] = h
                labels.append(lab)
    if handles:
        fig.legend(
            [handles[lab] for lab in labels],
            labels,
            loc="outside lower center",
            ncol=max(1, min(ncol, len(labels))),
            frameon=False,
            handlelength=2.2,
            columnspacing=1.0,
            handletextpad=0.4,
        )


def _series_kwargs(method: str, run_index: int, styles: dict, variant: int = 0, several_runs: bool = False) -> dict:
    """A series' line: the method's colour (a shade per variant), marker and dash; with several runs the run sets
    the dash and the marker fill instead (a method keeps its colour and marker across runs)."""
    st = styles.get(method) or method_style(method)
    colour = _shade(st["color"], VARIANT_SHADES[variant % len(VARIANT_SHADES)])
    dash = RUN_LINESTYLES[run_index % len(RUN_LINESTYLES)] if several_runs else st.get("linestyle", "-")
    return {
        "color": colour,
        "marker": st["marker"],
        "markeredgecolor": _edge(colour),
        "markeredgewidth": 0.6,
        "linestyle": dash,
        "fillstyle": RUN_FILLSTYLES[run_index % len(RUN_FILLSTYLES)],
    }


def _published_kwargs(method: str, styles: dict) -> dict:
    st = styles.get(method) or method_style(method)
    return {"color": st["color"], "marker": st["marker"], "fillstyle": "none", "markeredgewidth": 1.0, "linestyle": "none", "markersize": 5.0, "zorder": 3}


def _legend_columns(width: float) -> int:
    return 4 if width >= DOUBLE_COLUMN_IN else 2


def _panel_values(ax) -> np.ndarray:
    """The finite y values of an axis' data lines (crosses drawn in axes coordinates excluded)."""
    values = [np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines() if not line.get_label().startswith("_")]
    values = np.concatenate(values) if values else np.array([])
    return values[np.isfinite(values)]


def _nbins(width: float) -> int:
    return 4 if width < DOUBLE_COLUMN_IN else 6


def _plain_ticks(axis, width: float) -> None:
    """Few ticks with plain labels: no offset text, no scientific notation (the unit is in the axis label)."""
    axis.set_major_locator(MaxNLocator(nbins=_nbins(width), steps=[1, 2, 2.5, 5, 10], min_n_ticks=3))
    formatter = ScalarFormatter(useOffset=False)
    formatter.set_scientific(False)
    axis.set_major_formatter(formatter)


def _sensible_y(ax, values: np.ndarray, width: float) -> None:
    """Plain y ticks; a flat panel (every value the same) gets an axis from 0 to just above the value instead of
    matplotlib's +-4 % around it, so it reads as "all equal" rather than as noise."""
    _plain_ticks(ax.yaxis, width)
    if not len(values):
        return
    lo, hi = float(values.min()), float(values.max())
    if hi - lo <= 1e-9 * max(1.0, abs(hi)):
        top = hi * 1.1 if hi > 0 else 1.0
        ax.set_ylim(min(0.0, lo * 1.1), top)


LABEL_OFFSETS = ((3, 2, "left", "bottom"), (-3, 2, "right", "bottom"), (3, -2, "left", "top"), (-3, -2, "right", "top"))


def _place_labels(fig: Figure, ax, labels: list[tuple[float, float, str]]) -> None:
    """Budget labels beside their points: up-right, else the first of the other corners where the label does not
    cover one already placed (points that share a position, e.g. two methods at one budget, get labels apart)."""
    if not labels:
        return
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    fig.draw_without_rendering()  # the layout, so positions are final
    renderer = canvas.get_renderer()
    r = renderer.points_to_pixels(2.5)  # a marker's radius: a label does not cover another point either
    placed = [Bbox.from_extents(px - r, py - r, px + r, py + r) for px, py in ax.transData.transform([(x, y) for x, y, _ in labels])]
    for x, y, text in labels:
        chosen = None
        for dx, dy, ha, va in LABEL_OFFSETS:
            ann = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va, fontsize=MIN_FONT_PT, color="0.3", zorder=5)
            box = ann.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in placed):
                chosen = (ann, box)
                break
            ann.remove()
        if chosen is None:  # every corner taken: up-right anyway
            ann = ax.annotate(text, (x, y), xytext=(3, 2), textcoords="offset points", fontsize=MIN_FONT_PT, color="0.3", zorder=5)
            chosen = (ann, ann.get_window_extent(renderer))
        placed.append(chosen[1])


def robust_limits(values: Sequence[float], k: float = 3.0) -> tuple[float, float, np.ndarray]:
    """(low, high, outlier mask) of an axis showing ``values``: the data range, except that values beyond the
    upper Tukey fence (q3 + k * IQR, on the log scale for positive data, where latencies spread) fall outside;
    at least half of the values always stay inside."""
    x = np.asarray(values, dtype=float)
    finite = np.isfinite(x)
    if finite.sum() < 3:
        v = x[finite]
        lo, hi = (float(v.min()), float(v.max())) if len(v) else (0.0, 1.0)
        return lo, hi, np.zeros_like(x, dtype=bool)
    v = x[finite]
    positive = bool((v > 0).all())
    t = np.log(v) if positive else v
    q1, q3 = np.quantile(t, [0.25, 0.75])
    fence = q3 + k * max(q3 - q1, 0.05 * max(abs(q3), 1e-9) if not positive else 0.05)
    outlier = np.zeros_like(x, dtype=bool)
    outlier[finite] = t > fence
    if outlier.sum() > len(v) / 2:
        outlier[:] = False
    inside = x[finite & ~outlier]
    return float(inside.min()), float(inside.max()), outlier


Y_AXES = {"relacc": "RelAcc (%)", "agreement": "Agreement with unpruned (%)", "score": "Mean task score"}


def accuracy_column(df: pd.DataFrame) -> str:
    """RelAcc where the pruned cells have it; else agreement (e.g. an unpruned score of 0 leaves RelAcc
    undefined); else the mean task score."""
    pruned = df[(df["source"] == MEASURED) & (df["method"] != BASELINE_METHOD) & (df["status"] == "done")]
    for col in ("relacc", "agreement"):
        if pruned[col].notna().any():
            return col
    return "score"


def cost_label(df: pd.DataFrame, cost: str, unit: str | None = None) -> str:
    """The cost axis' label, in ``unit`` (default: the leaderboard's for this cost)."""
    unit = unit or cost_scale(df, cost)[1]
    if cost == "prefill_ms":
        what = "Time to first token" if latency_title(df).startswith("TTFT") else "Prefill latency"
        bar = "prefill_p90_ms" in df.columns and bool((df["prefill_p90_ms"] >= df["prefill_ms"]).any())
        return f"{what} (ms, median{'; bar: p90' if bar else ''})"
    if cost == "tflops":
        return f"Prefill {unit}"
    return f"KV cache ({unit})"


COST_NAMES = {"prefill_ms": "Prefill latency", "tflops": "Prefill", "kv_mb": "KV cache"}


def cost_scale(df: pd.DataFrame, cost: str) -> tuple[float, str]:
    """(factor, unit) a cost is drawn in: the leaderboard's unit for FLOPs (GFLOPs / TFLOPs) and KV (MB / GB)."""
    if cost == "prefill_ms":
        return 1.0, "ms"
    factor, unit = display_units(df)[cost]
    return factor, unit


def save_figure(fig: Figure, outdir: str | Path, stem: str, formats: Sequence[str] = ("png", "pdf"), dpi: int = 300) -> list[Path]:
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = outdir / f"{stem}.{fmt}"
        with matplotlib.rc_context(RC):
            fig.savefig(path, format=fmt, dpi=dpi)
        paths.append(path)
    return paths
