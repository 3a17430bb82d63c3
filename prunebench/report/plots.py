"""Paper figures from a leaderboard: budget curves, accuracy-vs-cost Pareto plots, a RelAcc heat map.

Every function takes the DataFrame of :func:`prunebench.report.leaderboard` and returns a matplotlib
``Figure`` (built without pyplot, so no display and no global state is needed). Sizes follow a two-column
paper: 3.3 in wide for one column, 7 in for the full width, fonts of 7-8 pt. Colours come from seaborn's
colour-blind palette and are fixed per method: the sorted method names of all the runs shown together get the
palette in order (published-only methods follow), so a method has the same colour and marker in every figure.
Published numbers are drawn with hollow markers.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Iterable, Sequence

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

from prunebench.report.leaderboard import MEASURED, display_name, task_columns
from prunebench.store import BASELINE_METHOD

log = logging.getLogger(__name__)

SINGLE_COLUMN_IN = 3.3
DOUBLE_COLUMN_IN = 7.0
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "p", "*")
BASELINE_STYLE = {"color": "black", "marker": "*"}
RUN_LINESTYLES = ("-", "--", "-.", (0, (1, 1)))  # one per run when several runs are combined
COST_AXES = {"prefill_ms": "Prefill latency (ms)", "tflops": "Prefill TFLOPs", "kv_mb": "KV cache (MB)"}
RC = {
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
    "legend.fontsize": 7, "legend.title_fontsize": 7, "figure.titlesize": 8, "lines.linewidth": 1.2,
    "lines.markersize": 4.5, "axes.linewidth": 0.6, "grid.linewidth": 0.4, "pdf.fonttype": 42, "ps.fonttype": 42,
    "savefig.dpi": 300, "savefig.bbox": "tight", "axes.grid": True, "grid.alpha": 0.4,
}


def _width(width: str | float) -> float:
    if isinstance(width, (int, float)):
        return float(width)
    return {"single": SINGLE_COLUMN_IN, "double": DOUBLE_COLUMN_IN}[width]


def method_styles(methods: Iterable[str], extra: Iterable[str] = ()) -> dict[str, dict[str, object]]:
    """Fixed method -> {color, marker}: palette order = sorted ``methods``, then sorted ``extra`` (published-only)."""
    palette = sns.color_palette("colorblind", 10)
    names = sorted({m for m in methods if m != BASELINE_METHOD})
    names += sorted({m for m in extra if m != BASELINE_METHOD} - set(names))
    styles: dict[str, dict[str, object]] = {BASELINE_METHOD: dict(BASELINE_STYLE)}
    for i, name in enumerate(names):
        styles[name] = {"color": palette[i % len(palette)], "marker": MARKERS[i % len(MARKERS)]}
    return styles


def styles_for(df: pd.DataFrame) -> dict[str, dict[str, object]]:
    measured = df["method"][df["source"] == MEASURED]
    return method_styles(measured, df["method"][df["source"] != MEASURED])


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


def _groups(df: pd.DataFrame):
    """Measured rows grouped per (method, run); the label names the run only when a method comes from several."""
    runs_per_method = df.groupby("method")["run"].nunique()
    for (method, run), group in df.groupby(["method", "run"], sort=True):
        label = display_name(method)
        if runs_per_method.get(method, 1) > 1:
            label += f" [{run}]"
        yield method, run, label, group


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
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FixedFormatter([str(t) for t in ticks]))


def _published_name(method: str, group: pd.DataFrame) -> str:
    """A published method's legend name: prunebench's name for known methods, else the paper's own label."""
    name = display_name(method)
    if name == method and len(group):
        name = str(group["label"].iloc[0]).split(" (")[0]
    return f"{name} (published)"


def _legend(fig: Figure, axes, ncol: int) -> None:
    handles, labels = {}, []
    for ax in np.ravel(axes):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    if handles:
        fig.legend([handles[lab] for lab in labels], labels, loc="outside lower center", ncol=min(ncol, len(labels)),
                   frameon=False, handlelength=1.8, columnspacing=1.0)


def budget_curves(df: pd.DataFrame, panels: Sequence[str] | None = None, width: str | float = "double") -> Figure:
    """Score (one panel per task) and RelAcc versus budget, one line per method, unpruned as a dashed line.

    ``panels``: the columns to plot (default: every task, then ``relacc``). Published numbers, where their
    benchmark matches a panel, are hollow markers.
    """
    tasks = task_columns(df)
    measured = df[(df["source"] == MEASURED)]
    if panels is None:
        panels = [t for t in tasks if measured[t].notna().any()] + ["relacc"]
    styles = styles_for(df)
    pruned = measured[(measured["method"] != BASELINE_METHOD) & measured["budget"].notna()]
    baselines = measured[(measured["method"] == BASELINE_METHOD) & (measured["status"] == "done")]
    published = df[(df["source"] != MEASURED) & (df["budget"].fillna(0) > 0) & (df["method"] != BASELINE_METHOD)]
    runs = sorted(pruned["run"].unique())
    ncols = min(len(panels), 3 if _width(width) >= DOUBLE_COLUMN_IN else 2)
    nrows = math.ceil(len(panels) / ncols)
    with matplotlib.rc_context(RC):
        w = _width(width)
        fig = Figure(figsize=(w, 1.9 * nrows + 0.5), layout="constrained")
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        for ax, col in zip(axes, panels):
            for method, run, label, group in _groups(pruned):
                group = group.sort_values("budget")
                y = group[col].where(group["status"] == "done")
                st = styles[method]
                ax.plot(group["budget"].astype(float), y.astype(float), color=st["color"], marker=st["marker"], label=label,
                        linestyle=RUN_LINESTYLES[runs.index(run) % len(RUN_LINESTYLES)])
            for _, base in baselines.iterrows():
                value = 100.0 if col == "relacc" and pd.isna(base[col]) else base[col]
                if pd.isna(value):
                    continue
                label = "Unpruned" if baselines["run"].nunique() == 1 else f"Unpruned [{base['run']}]"
                ax.axhline(float(value), color="black", linestyle=":", linewidth=1.0, label=label)
            if col in published.columns:
                for (method, source), group in published[published[col].notna()].groupby(["method", "source"], sort=True):
                    st = styles[method]
                    ax.scatter(group["budget"].astype(float), group[col].astype(float), marker=st["marker"], facecolors="none",
                               edgecolors=[st["color"]], linewidths=0.9, s=22, zorder=3,
                               label=_published_name(method, group))
            shown = list(pruned["budget"].dropna())
            if col in published.columns:
                shown += list(published.loc[published[col].notna(), "budget"])
            _log2_budget_axis(ax, shown)
            ax.set_title("RelAcc (%)" if col == "relacc" else col)
            ax.set_xlabel("visual tokens (budget)")
        for ax in axes[len(panels):]:
            ax.set_visible(False)
        axes[0].set_ylabel("score")
        _legend(fig, axes[: len(panels)], ncol=4 if _width(width) >= DOUBLE_COLUMN_IN else 2)
    return fig


Y_AXES = {"relacc": "RelAcc (%)", "agreement": "Agreement with unpruned (%)", "score": "Mean task score"}


def accuracy_column(df: pd.DataFrame) -> str:
    """RelAcc where the pruned cells have it; else agreement (e.g. an unpruned score of 0 leaves RelAcc
    undefined); else the mean task score."""
    pruned = df[(df["source"] == MEASURED) & (df["method"] != BASELINE_METHOD) & (df["status"] == "done")]
    for col in ("relacc", "agreement"):
        if pruned[col].notna().any():
            return col
    return "score"


def pareto_plot(df: pd.DataFrame, cost: str = "prefill_ms", y: str | None = None, width: str | float = "single") -> Figure:
    """Accuracy versus a cost column, a marker per method, the Pareto front as a step line.

    ``y``: "relacc", "agreement" or "score" (mean over tasks); default :func:`accuracy_column`.
    """
    if cost not in COST_AXES:
        raise ValueError(f"cost must be one of {sorted(COST_AXES)}, got {cost!r}")
    y = y or accuracy_column(df)
    if y not in Y_AXES:
        raise ValueError(f"y must be one of {sorted(Y_AXES)}, got {y!r}")
    styles = styles_for(df)
    rows = df[(df["status"].isin(["done", "published"]))].copy()
    if y == "score":
        rows["score"] = rows[task_columns(df)].mean(axis=1)
    if y == "relacc":
        rows.loc[(rows["method"] == BASELINE_METHOD) & rows["relacc"].isna() & (rows["source"] == MEASURED), "relacc"] = 100.0
    rows = rows[rows[cost].notna() & rows[y].notna()]
    measured = rows[rows["source"] == MEASURED]
    with matplotlib.rc_context(RC):
        w = _width(width)
        fig = Figure(figsize=(w, 0.8 * w + 0.4), layout="constrained")
        ax = fig.subplots()
        for method, run, label, group in _groups(measured):
            st = styles[method]
            ax.scatter(group[cost].astype(float), group[y].astype(float), color=st["color"], marker=st["marker"],
                       s=40 if method == BASELINE_METHOD else 22, label=label, zorder=3)
        published = rows[rows["source"] != MEASURED]
        for (method, source), group in published.groupby(["method", "source"], sort=True):
            st = styles[method]
            ax.scatter(group[cost].astype(float), group[y].astype(float), marker=st["marker"], facecolors="none",
                       edgecolors=[st["color"]], linewidths=0.9, s=22, zorder=3, label=_published_name(method, group))
        points = list(zip(measured[cost].astype(float), measured[y].astype(float)))
        front = pareto_front(points)
        if front:
            xs = [points[i][0] for i in front]
            ys = [points[i][1] for i in front]
            ax.plot(xs, ys, color="0.35", linewidth=0.9, drawstyle="steps-post", zorder=1, label="Pareto front")
        ax.set_xlabel(COST_AXES[cost])
        ax.set_ylabel(Y_AXES[y])
        ax.legend(loc="lower right", frameon=False, handletextpad=0.3, borderaxespad=0.2)
    return fig


def relacc_heatmap(df: pd.DataFrame, width: str | float = "single") -> Figure:
    """Per-task RelAcc (score / unpruned score, %) of every measured cell; failed or infeasible cells stay as
    empty rows labelled with their status."""
    tasks = [t for t in task_columns(df) if df.loc[df["source"] == MEASURED, t].notna().any()]
    measured = df[(df["source"] == MEASURED) & (df["method"] != BASELINE_METHOD)]
    base = _task_baselines(df)
    data, labels = [], []
    for _, row in measured.iterrows():
        ref = base.get((row["run"], row["model"], row["suite"]), {})
        values = []
        for t in tasks:
            b = ref.get(t, math.nan)
            s = row[t] if row["status"] == "done" else math.nan
            values.append(100.0 * s / b if b and not math.isnan(b) and not pd.isna(s) else math.nan)
        data.append(values)
        budget = "" if pd.isna(row["budget"]) else f" @{int(row['budget'])}"
        status = "" if row["status"] == "done" else f" ({row['status']})"
        labels.append(f"{row['label']}{budget}{status}")
    matrix = pd.DataFrame(data, index=labels, columns=tasks, dtype=float)
    with matplotlib.rc_context(RC):
        w = _width(width)
        fig = Figure(figsize=(w, 0.2 * max(len(labels), 1) + 1.2), layout="constrained")
        ax = fig.subplots()
        if matrix.empty:
            ax.text(0.5, 0.5, "no measured cells", ha="center", va="center", transform=ax.transAxes)
            return fig
        finite = matrix.stack().dropna()
        vmin = float(min(finite.min(), 100.0)) if len(finite) else 0.0
        sns.heatmap(matrix, ax=ax, annot=True, fmt=".0f", annot_kws={"fontsize": 7}, cmap="cividis", vmin=vmin,
                    vmax=float(max(finite.max(), 100.0)) if len(finite) else 100.0, linewidths=0.3,
                    cbar_kws={"label": "RelAcc (%)"})
        ax.grid(False)
        ax.set_xlabel("")
        ax.set_ylabel("")
        ax.tick_params(axis="x", rotation=30)
        for text in ax.get_xticklabels():
            text.set_horizontalalignment("right")
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


def plot_all(df: pd.DataFrame, outdir: str | Path, formats: Sequence[str] = ("png", "pdf"), dpi: int = 300) -> list[Path]:
    """Every figure of every model in ``df``, written to ``outdir`` (one file per figure and format)."""
    paths: list[Path] = []
    models = [m for m in df["model"][df["source"] == MEASURED].unique() if m] or [""]
    for model in models:
        part = df[(df["model"] == model) | (df["source"] != MEASURED)] if model else df
        part.attrs = dict(df.attrs)
        suffix = f"_{_slug(model)}" if len(models) > 1 else ""
        paths += save_figure(budget_curves(part), outdir, f"budget_curves{suffix}", formats, dpi)
        for cost in COST_AXES:
            measured = part[part["source"] == MEASURED]
            if measured[cost].notna().any():
                paths += save_figure(pareto_plot(part, cost), outdir, f"pareto_{cost}{suffix}", formats, dpi)
            else:
                log.warning("no %s measured for %s: Pareto plot skipped", cost, model or "these runs")
        paths += save_figure(relacc_heatmap(part), outdir, f"relacc_heatmap{suffix}", formats, dpi)
    return paths


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in text)
