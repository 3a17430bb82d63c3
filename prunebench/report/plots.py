"""Paper figures from a leaderboard: budget curves, accuracy-vs-cost Pareto plots, a RelAcc heat map.

Every function takes the DataFrame of :func:`prunebench.report.leaderboard` and returns a matplotlib
``Figure`` (built without pyplot, so no display and no global state is needed). Widths follow a two-column
paper: ``"single"`` = 3.5 in (one column), ``"double"`` = 7 in (the text width), or any number of inches;
no text is smaller than 7 pt. Colours come from seaborn's colour-blind palette with its two lightest colours
(light pink, yellow) replaced by darker colour-blind-safe ones from Paul Tol's palettes (wine, olive), so every
colour keeps at least 2.3:1 contrast on white (:data:`PALETTE`). Colour, marker and line style are fixed per
method name (:data:`METHOD_STYLES`: every registered method and every method of the shipped published tables,
chosen so that no two methods of one published table share a colour; other names get a style from a hash of the
name), so a method looks the same in every figure and every invocation whatever subset is shown, and curves
that overlap stay apart by marker and dash. The star is the unpruned model's only. Costs are drawn in the unit
the leaderboard prints them in (GFLOPs or TFLOPs, MB or GB); Pareto points carry their budget; latency is the
median with a bar up to the p90, on limits that one outlier cannot stretch (it is drawn at the edge, with its
value). Each series is one leaderboard label (a method with its parameters, budget mode,
suite and run); with several runs, each run has its own line style and marker fill. Published numbers are
hollow markers labelled with their source ("FastV (VisPruner T1)").
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

from prunebench.report.leaderboard import MEASURED, task_columns
from prunebench.report.published import short_source
from prunebench.report.styles import (
    BASELINE_COLOURS,
    BASELINE_LINESTYLES,
    COST_AXES,
    DOUBLE_COLUMN_IN,
    MAX_HEIGHT_IN,
    METHOD_STYLES,
    MIN_FONT_PT,
    PALETTE,
    RC,
    SINGLE_COLUMN_IN,
    Y_AXES,
    _edge,
    _groups,
    _legend,
    _legend_columns,
    _log2_budget_axis,
    _panel_values,
    _place_labels,
    _plain_ticks,
    _published_groups,
    _published_kwargs,
    _sensible_y,
    _series,
    _series_kwargs,
    _width,
    accuracy_column,
    cost_label,
    cost_scale,
    method_style,
    method_styles,
    robust_limits,
    save_figure,
    styles_for,
)
from prunebench.store import BASELINE_METHOD

# figures, and the styles that callers import from here (moved to styles.py)
__all__ = [
    "DOUBLE_COLUMN_IN",
    "METHOD_STYLES",
    "PALETTE",
    "SINGLE_COLUMN_IN",
    "budget_curves",
    "choose_published",
    "default_published_source",
    "method_style",
    "method_styles",
    "pareto_front",
    "pareto_plot",
    "plot_all",
    "relacc_heatmap",
    "robust_limits",
    "save_figure",
    "styles_for",
]

log = logging.getLogger(__name__)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats (lower or equal cost and higher or equal accuracy, one strictly),
    ordered by cost. Points with a NaN coordinate are never on the front; of identical points the first is kept."""
    valid = [i for i, (x, y) in enumerate(points) if not (math.isnan(x) or math.isnan(y))]
    order = sorted(valid, key=lambda i: (points[i][0], -points[i][1], i))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def budget_curves(df: pd.DataFrame, panels: Sequence[str] | None = None, width: str | float = "double") -> Figure:
    """Score (one panel per task) and RelAcc versus budget, one line per series, the unpruned model as a dotted
    line (one style per run); a failed or infeasible budget is an × on the axis.

    ``panels``: the columns to plot (default: every task, then ``relacc``). Published numbers, where their
    benchmark is a panel's task (see :mod:`prunebench.report.published`), are hollow markers.
    """
    tasks = task_columns(df)
    measured = df[(df["source"] == MEASURED) & (df["status"] != "missing")]
    if panels is None:
        panels = [t for t in tasks if measured[t].notna().any()] + ["relacc"]
    styles = styles_for(df)
    pruned = measured[(measured["method"] != BASELINE_METHOD) & measured["budget"].notna()]
    baselines = measured[(measured["method"] == BASELINE_METHOD) & (measured["status"] == "done")]
    published = df[(df["source"] != MEASURED) & (df["budget"].fillna(0) > 0) & (df["method"] != BASELINE_METHOD)]
    runs = sorted(measured["run"].unique())
    w = _width(width)
    ncols = min(len(panels), 3 if w >= DOUBLE_COLUMN_IN else 2)
    nrows = math.ceil(len(panels) / ncols)
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(w, 1.9 * nrows + 0.6), layout="constrained")
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        for i, (ax, col) in enumerate(zip(axes, panels)):
            stacked: dict[float, int] = {}  # crosses at one budget stack upwards instead of hiding each other
            for method, run, variant, label, group in _series(pruned):
                group = group.sort_values("budget")
                done = group["status"] == "done"
                kwargs = _series_kwargs(method, run, styles, variant, several_runs=len(runs) > 1)
                ax.plot(group["budget"].astype(float), group[col].where(done).astype(float), label=label, **kwargs)
                for budget in group.loc[~done, "budget"].astype(float):  # failed / infeasible: a cross on the axis
                    level = stacked.get(budget, 0)
                    stacked[budget] = level + 1
                    ax.plot(
                        [budget],
                        [0.04 + 0.07 * level],
                        transform=blended_transform_factory(ax.transData, ax.transAxes),
                        linestyle="none",
                        marker="x",
                        color=kwargs["color"],
                        markersize=4.5,
                        markeredgewidth=1.1,
                        clip_on=False,
                        zorder=4,
                        label="_lost",
                    )
            for _, base in baselines.iterrows():
                value = 100.0 if col == "relacc" and pd.isna(base[col]) else base[col]
                if pd.isna(value):
                    continue
                k = runs.index(base["run"]) if base["run"] in runs else 0
                label = "Unpruned" if baselines["run"].nunique() == 1 else f"Unpruned [{base['run']}]"
                ax.axhline(
                    float(value),
                    color=BASELINE_COLOURS[k % len(BASELINE_COLOURS)],
                    linestyle=BASELINE_LINESTYLES[k % len(BASELINE_LINESTYLES)],
                    linewidth=1.0,
                    label=label,
                    zorder=1,
                )
            if col in published.columns:
                for method, name, group in _published_groups(published[published[col].notna()]):
                    ax.plot(group["budget"].astype(float), group[col].astype(float), label=name, **_published_kwargs(method, styles))
            shown = list(pruned["budget"].dropna())
            if col in published.columns:
                shown += list(published.loc[published[col].notna(), "budget"])
            _log2_budget_axis(ax, shown)
            _sensible_y(ax, _panel_values(ax), w)
            ax.set_title("RelAcc (%)" if col == "relacc" else col)
            ax.set_xlabel("visual tokens (budget)")
            if col == "relacc":
                ax.set_ylabel("RelAcc (%)")
            elif i % ncols == 0:
                ax.set_ylabel("score")
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        if len(pruned) and (pruned["status"] != "done").any():
            axes[0].plot([], [], linestyle="none", marker="x", color="0.3", markeredgewidth=1.1, label="failed / infeasible")
        _legend(fig, axes[: len(panels)], ncol=_legend_columns(w))
    return fig


def pareto_plot(df: pd.DataFrame, cost: str = "prefill_ms", y: str | None = None, width: str | float = "single") -> Figure:
    """Accuracy versus a cost column, a marker per series (thin lines join a series' budgets) labelled with its
    budget, the Pareto front of the measured points as a step line, the legend below the axes.

    The cost is drawn in the leaderboard's unit (GFLOPs or TFLOPs, MB or GB). Latency is the median with a bar up
    to the p90; its axis ends where the bulk of the points ends (:func:`robust_limits`): a point beyond it (a
    sample of a loaded machine) is drawn as a triangle at the edge with its value.
    ``y``: "relacc", "agreement" or "score" (mean over tasks); default :func:`accuracy_column`. Published rows
    are drawn where the paper prints that cost (in its own convention); the others are counted in a warning.
    """
    if cost not in COST_AXES:
        raise ValueError(f"cost must be one of {sorted(COST_AXES)}, got {cost!r}")
    y = y or accuracy_column(df)
    if y not in Y_AXES:
        raise ValueError(f"y must be one of {sorted(Y_AXES)}, got {y!r}")
    styles = styles_for(df)
    factor, unit = cost_scale(df, cost)
    rows = df[(df["status"].isin(["done", "published"]))].copy()
    rows[cost] = rows[cost] * factor
    if "prefill_p90_ms" in rows.columns and cost == "prefill_ms":
        rows["_p90"] = rows["prefill_p90_ms"]
    else:
        rows["_p90"] = np.nan
    if y == "score":
        rows["score"] = rows[task_columns(df)].mean(axis=1)
    if y == "relacc":
        rows.loc[(rows["method"] == BASELINE_METHOD) & rows["relacc"].isna() & (rows["source"] == MEASURED), "relacc"] = 100.0
    published_all = rows[rows["source"] != MEASURED]
    missing = published_all[published_all[cost].isna() | published_all[y].isna()]
    if len(missing):
        log.warning(
            "%d published row(s) of %s lack %s or %s: not in the %s Pareto plot",
            len(missing),
            ", ".join(sorted({short_source(s) for s in missing["source"]})),
            cost,
            y,
            cost,
        )
    rows = rows[rows[cost].notna() & rows[y].notna()]
    measured = rows[rows["source"] == MEASURED]
    several_runs = measured["run"].nunique() > 1
    w = _width(width)
    robust = cost == "prefill_ms"
    lo, hi, outlier = robust_limits(rows[cost].astype(float).to_numpy()) if robust and len(rows) else (0.0, 1.0, None)
    clipped = set(rows.index[outlier]) if outlier is not None and outlier.any() else set()
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(w, 0.75 * w + 0.6), layout="constrained")
        ax = fig.subplots()
        edge = blended_transform_factory(ax.transAxes, ax.transData)
        budget_labels: list[tuple[float, float, str]] = []
        for method, run, variant, label, group in _series(measured):
            group = group.sort_values("budget", na_position="last")
            kwargs = _series_kwargs(method, run, styles, variant, several_runs)
            kwargs["markersize"] = 8.0 if method == BASELINE_METHOD else 5.0
            if method == BASELINE_METHOD:
                kwargs["markeredgecolor"] = "black"
            shown = group[~group.index.isin(clipped)]
            line = dict(kwargs, linewidth=0.6, alpha=0.55) if len(group) > 1 else dict(kwargs, linestyle="none")
            ax.plot(shown[cost].astype(float), shown[y].astype(float), label=label, zorder=3, **line)
            spread = shown[shown["_p90"].notna() & (shown["_p90"] >= shown[cost])]
            if len(spread):  # median to p90: an upper bar only
                ax.errorbar(
                    spread[cost].astype(float),
                    spread[y].astype(float),
                    xerr=[np.zeros(len(spread)), (spread["_p90"] - spread[cost]).astype(float).to_numpy()],
                    fmt="none",
                    ecolor=kwargs["color"],
                    elinewidth=0.7,
                    capsize=1.5,
                    alpha=0.8,
                    zorder=2,
                    label="_p90",
                )
            for _, row in group.iterrows():
                if row.name in clipped:
                    ax.plot(
                        [1.0],
                        [float(row[y])],
                        transform=edge,
                        marker=">",
                        color=kwargs["color"],
                        markeredgecolor=_edge(kwargs["color"]),
                        linestyle="none",
                        markersize=5.0,
                        clip_on=False,
                        zorder=4,
                        label="_clipped",
                    )
                    ax.annotate(
                        f"{row[cost]:.0f} {unit}",
                        (1.0, float(row[y])),
                        xycoords=edge,
                        xytext=(-4, 4),
                        textcoords="offset points",
                        ha="right",
                        va="bottom",
                        fontsize=MIN_FONT_PT,
                        color="0.25",
                    )
                elif method != BASELINE_METHOD and not pd.isna(row["budget"]):
                    budget_labels.append((float(row[cost]), float(row[y]), str(int(row["budget"]))))
        for method, name, group in _published_groups(rows[rows["source"] != MEASURED]):
            group = group[~group.index.isin(clipped)]
            ax.plot(group[cost].astype(float), group[y].astype(float), label=name, **_published_kwargs(method, styles))
        points = list(zip(measured[cost].astype(float), measured[y].astype(float)))
        front = pareto_front(points)
        if front:
            xs = [points[i][0] for i in front]
            ys = [points[i][1] for i in front]
            ax.plot(xs, ys, color="0.35", linewidth=0.9, linestyle=(0, (4, 1.5)), drawstyle="steps-post", zorder=1, label="Pareto front")
        _plain_ticks(ax.xaxis, w)
        _plain_ticks(ax.yaxis, w)
        if robust and len(rows):
            p90 = float(np.nanmax(rows.loc[~rows.index.isin(clipped), "_p90"].to_numpy(dtype=float), initial=hi))
            top = max(hi, min(p90, hi + max(hi - lo, 0.1 * hi)))  # p90 bars fit, but may not stretch the axis much
            pad = 0.08 * (top - lo) or 0.1 * max(abs(top), 1.0)
            ax.set_xlim(max(0.0, lo - pad) if lo >= 0 else lo - pad, top + pad)
        values = measured[y].astype(float).to_numpy()
        if len(values) and np.nanmax(values) - np.nanmin(values) <= 1e-9 * max(1.0, abs(np.nanmax(values))):
            _sensible_y(ax, values, w)
        ax.margins(y=0.08)  # the unpruned star at the top stays whole
        _place_labels(fig, ax, budget_labels)
        ax.set_xlabel(cost_label(df, cost, unit))
        ax.set_ylabel(Y_AXES[y])
        if clipped:
            ax.plot([], [], linestyle="none", marker=">", color="0.3", label=f"beyond the axis ({len(clipped)})")
        _legend(fig, [ax], ncol=2 if w < DOUBLE_COLUMN_IN else 3)
    return fig


def relacc_heatmap(df: pd.DataFrame, width: str | float = "double", panels: Sequence[str] | None = None) -> Figure:
    """RelAcc (%) as a series x budget grid: one panel for the mean RelAcc, then one per task (score / unpruned
    score). A failed or infeasible cell shows ×. The cells shrink so the figure stays within a page
    (:data:`MAX_HEIGHT_IN`); ``panels`` chooses tasks (and "relacc") when there are too many to read."""
    tasks = [t for t in task_columns(df) if df.loc[df["source"] == MEASURED, t].notna().any()]
    panels = list(panels) if panels is not None else ["relacc"] + tasks
    measured = df[(df["source"] == MEASURED) & (df["method"] != BASELINE_METHOD) & df["budget"].notna()]
    base = _task_baselines(df)
    budgets = sorted({int(b) for b in measured["budget"]})
    series = [(label, group) for _, _, label, group in _groups(measured)]
    grids: dict[str, np.ndarray] = {}
    lost = np.zeros((len(series), len(budgets)), dtype=bool)
    for col in panels:
        grid = np.full((len(series), len(budgets)), np.nan)
        for i, (_, group) in enumerate(series):
            for _, row in group.iterrows():
                j = budgets.index(int(row["budget"]))
                if row["status"] != "done":
                    lost[i, j] = True
                    continue
                if col == "relacc":
                    grid[i, j] = row["relacc"]
                else:
                    b = base.get((row["run"], row["model"], row["suite"]), {}).get(col, math.nan)
                    s = row[col]
                    grid[i, j] = 100.0 * s / b if b and not math.isnan(b) and not pd.isna(s) else math.nan
        grids[col] = grid
    w = _width(width)
    ncols = max(1, min(len(panels), 3 if w >= DOUBLE_COLUMN_IN else 1))
    nrows = math.ceil(len(panels) / ncols)
    cell_h = 0.19
    height = nrows * (cell_h * max(len(series), 1) + 0.55) + 0.5
    if height > MAX_HEIGHT_IN:
        cell_h = max(0.12, (MAX_HEIGHT_IN - 0.5) / nrows / max(len(series), 1) - 0.55 / max(len(series), 1))
        height = nrows * (cell_h * max(len(series), 1) + 0.55) + 0.5
        if height > MAX_HEIGHT_IN:
            log.warning("the heat map is %.1f in tall (more than a page): choose fewer panels or series", height)
    finite = np.concatenate([g[np.isfinite(g)] for g in grids.values()]) if grids else np.array([])
    vmin = float(min(finite.min(), 100.0)) if finite.size else 0.0
    vmax = float(max(finite.max(), 100.0)) if finite.size else 100.0
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(w, height), layout="constrained")
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        if not series:
            axes[0].text(0.5, 0.5, "no measured cells", ha="center", va="center", transform=axes[0].transAxes)
            for ax in axes:
                ax.set_axis_off()
            return fig
        labels = [label for label, _ in series]
        for k, (ax, col) in enumerate(zip(axes, panels)):
            frame = pd.DataFrame(grids[col], index=labels, columns=[str(b) for b in budgets])
            sns.heatmap(
                frame,
                ax=ax,
                annot=True,
                fmt=".0f",
                annot_kws={"fontsize": 7},
                cmap="cividis",
                vmin=vmin,
                vmax=vmax,
                linewidths=0.3,
                linecolor="white",
                cbar=False,
                yticklabels=labels if k % ncols == 0 else False,
            )
            for i, j in zip(*np.nonzero(lost)):
                ax.text(j + 0.5, i + 0.5, "×", ha="center", va="center", fontsize=8, color="0.35")
            ax.grid(False)
            ax.set_title("RelAcc (mean over tasks)" if col == "relacc" else col)
            ax.set_xlabel("budget")
            ax.set_ylabel("")
            ax.tick_params(axis="y", rotation=0, length=0)
            ax.tick_params(axis="x", rotation=0, length=0)
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        mappable = axes[0].collections[0]
        fig.colorbar(mappable, ax=list(axes[: len(panels)]), label="RelAcc (%)", shrink=0.8, aspect=30, pad=0.02)
    return fig


def _task_baselines(df: pd.DataFrame) -> dict[tuple, dict[str, float]]:
    """Unpruned score per task, per (run, model, suite): from the baseline rows, else the records' own values."""
    out: dict[tuple, dict[str, float]] = {}
    for key, scores in df.attrs.get("task_baselines", {}).items():
        out[tuple(key.split("|", 2))] = dict(scores)
    tasks = task_columns(df)
    rows = df[(df["source"] == MEASURED) & (df["method"] == BASELINE_METHOD) & (df["status"] == "done")]
    for _, row in rows.iterrows():
        ref = out.setdefault((row["run"], row["model"], row["suite"]), {})
        ref.update({t: float(row[t]) for t in tasks if not pd.isna(row[t])})
    return out


def default_published_source(df: pd.DataFrame) -> str | None:
    """The published source to show when none is chosen: the one sharing most methods with the measured rows
    (then the one with fewest other methods, then most rows with a token budget, then the name), so the figure
    compares like with like and stays readable."""
    published = df[(df["source"] != MEASURED) & df["budget"].notna()]  # rows a budget axis can show
    if published.empty:
        published = df[df["source"] != MEASURED]
    if published.empty:
        return None
    measured = set(df.loc[df["source"] == MEASURED, "method"]) - {BASELINE_METHOD}

    def score(item):
        source, rows = item
        methods = set(rows["method"]) - {BASELINE_METHOD}
        shared = len(methods & measured)
        return (-shared, len(methods) - shared, -int(rows["budget"].notna().sum()), source)

    return min(published.groupby("source"), key=score)[0]


def choose_published(df: pd.DataFrame, source: str | None = None) -> pd.DataFrame:
    """``df`` with the published rows of one source: ``source`` (a substring of it), or the default one
    (:func:`default_published_source`, with a warning naming the others); ``source="all"`` keeps every source."""
    published = df["source"] != MEASURED
    sources = sorted(df.loc[published, "source"].unique())
    if len(sources) <= 1 or source == "all":
        return df
    if source:
        keep = [s for s in sources if source.lower() in s.lower()]
        if not keep:
            raise ValueError(f"no published source matches {source!r}; available: {'; '.join(sources)}")
    else:
        keep = [default_published_source(df)]
        log.warning(
            "%d published sources; the figures show %s (pick another with --published-source, or 'all'): %s",
            len(sources),
            keep[0].removeprefix("published: "),
            "; ".join(short_source(s) for s in sources if s not in keep),
        )
    out = df[~published | df["source"].isin(keep)]
    out.attrs = dict(df.attrs)
    return out


def plot_all(
    df: pd.DataFrame,
    outdir: str | Path,
    formats: Sequence[str] = ("png", "pdf"),
    dpi: int = 300,
    width: str | float | None = None,
    published_source: str | None = None,
) -> list[Path]:
    """Every figure of every model in ``df``, written to ``outdir`` (one file per figure and format).

    ``width``: every figure at this width (default: budget curves and heat map "double", Pareto plots "single").
    ``published_source``: which published table the figures show (see :func:`choose_published`).
    """
    paths: list[Path] = []
    models = [m for m in df["model"][df["source"] == MEASURED].unique() if m] or [""]
    for model in models:
        part = df[(df["model"] == model) | (df["source"] != MEASURED)] if model else df
        part.attrs = dict(df.attrs)
        part = choose_published(part, published_source)
        suffix = f"_{_slug(model)}" if len(models) > 1 else ""
        paths += save_figure(budget_curves(part, width=width or "double"), outdir, f"budget_curves{suffix}", formats, dpi)
        for cost in COST_AXES:
            measured = part[part["source"] == MEASURED]
            if measured[cost].notna().any():
                paths += save_figure(pareto_plot(part, cost, width=width or "single"), outdir, f"pareto_{cost}{suffix}", formats, dpi)
            else:
                log.warning("no %s measured for %s: Pareto plot skipped", cost, model or "these runs")
        paths += save_figure(relacc_heatmap(part, width=width or "double"), outdir, f"relacc_heatmap{suffix}", formats, dpi)
    return paths


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in text)
