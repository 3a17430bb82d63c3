"""Leaderboard: one row per cell (method x budget, plus the unpruned baseline), derived from result stores.

The DataFrame is the single source of every output (Markdown, CSV, LaTeX, plots). Its columns:

    run, source, model, suite, method, label, params, budget, budget_mode, status, error,
    <one column per task: that task's score>, relacc, agreement, prefill_ms, tflops, kv_mb,
    tflops_source, latency_source, tokens_final, tokens_layer_average, limit, seed, printed

``relacc`` and ``agreement`` are in percent (records hold ratios: 1.0 = the unpruned model). ``prefill_ms`` is
the median time to first token where the record has one (``latency_ms.ttft``), else the median LLM prefill
time (``latency_source`` says which: "ttft" or "prefill"). ``tflops`` is the measured count, falling back to
the analytic one (``tflops_source``). The human tables mark the fallbacks (analytic TFLOPs with †, prefill
times in a TTFT column with *) and rank each cost only among values of one kind. Failed and infeasible cells
keep their row with empty metrics and their ``status``/``error``; nothing is dropped silently. The task columns
are listed in ``df.attrs["tasks"]`` (see :func:`task_columns`). ``label`` names one series (a method with its
parameters, budget mode, suite and run) the same way at every budget, adding only what tells series apart.
Published rows (``source`` "published: <paper> <table>") keep the paper's printed text in ``printed``.

A run folder's leaderboard holds the cells of its ``plan.json`` (the sweep as last planned); records left in
``cells/`` by earlier plans of the same folder are shown only with ``all_cells=True``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import pandas as pd

from prunebench.report.display import (
    BYTE_UNITS,
    FLOP_UNITS,
    UNIT_COLUMNS,
    _assign_labels,
    budget_text,
    cell_text,
    choose_unit,
    column_decimals,
    column_title,
    cost_mark,
    cost_notes,
    display_columns,
    display_units,
    for_display,
    format_value,
    latency_title,
    legend,
    printed_text,
    random_weight_models,
    random_weights_note,
    series_columns,
    status_text,
    task_columns,
    task_decimals,
    value_columns,
    value_decimals,
)
from prunebench.report.records import (
    ANALYTIC_MARK,
    COLUMN_TITLES,
    CPU_FIELDS,
    DISPLAY_NAMES,
    EXTRA_COLUMNS,
    HIGHER_IS_BETTER,
    LATENCY_MARK,
    LOAD_FIELDS,
    LOAD_PER_CORE_LIMIT,
    MEASURED,
    META_COLUMNS,
    METRIC_COLUMNS,
    MISSING,
    P90_RATIO_LIMIT,
    PREFERRED_SOURCE,
    PREFILL_MARK,
    PUBLISHED_CITATIONS,
    SCALE_DECIMALS,
    TASK_DECIMALS,
    _fill_relacc,
    _row,
    citation_key,
    display_name,
    latency_flag,
    load_per_core,
    load_records,
    missing_records,
    planned_keys,
)
from prunebench.store import BASELINE_METHOD

# the names moved to records.py and display.py stay importable from here
__all__ = [
    "ANALYTIC_MARK",
    "BYTE_UNITS",
    "COLUMN_TITLES",
    "CPU_FIELDS",
    "DISPLAY_NAMES",
    "EXTRA_COLUMNS",
    "FLOP_UNITS",
    "HIGHER_IS_BETTER",
    "LATENCY_MARK",
    "LOAD_FIELDS",
    "LOAD_PER_CORE_LIMIT",
    "MEASURED",
    "META_COLUMNS",
    "METRIC_COLUMNS",
    "MISSING",
    "P90_RATIO_LIMIT",
    "PREFERRED_SOURCE",
    "PREFILL_MARK",
    "PUBLISHED_CITATIONS",
    "SCALE_DECIMALS",
    "TASK_DECIMALS",
    "UNIT_COLUMNS",
    "_row",
    "budget_text",
    "cell_text",
    "choose_unit",
    "citation_key",
    "column_decimals",
    "column_title",
    "cost_mark",
    "cost_notes",
    "display_columns",
    "display_name",
    "display_units",
    "for_display",
    "format_value",
    "latency_flag",
    "latency_title",
    "leaderboard",
    "legend",
    "load_per_core",
    "load_records",
    "missing_records",
    "planned_keys",
    "printed_text",
    "random_weight_models",
    "random_weights_note",
    "ranks",
    "series_columns",
    "status_text",
    "task_columns",
    "task_decimals",
    "to_csv",
    "to_markdown",
    "value_columns",
    "value_decimals",
]

log = logging.getLogger(__name__)


def leaderboard(
    store_or_records_or_paths: Any,
    with_published: bool = False,
    *,
    published_model: str | None = None,
    published_source: str | None = None,
    all_cells: bool = False,
) -> pd.DataFrame:
    """The leaderboard of one or several runs.

    ``store_or_records_or_paths``: a :class:`ResultStore`, a run folder, record dicts, or a list of those (several
    runs are combined; rows whose method and budget collide keep their run label). ``with_published`` adds the
    seed papers' published numbers for ``published_model`` (``published_source``: substring of paper/table to
    keep), marked ``source = "published: <paper> <table>"``. Without ``published_model``, the first measured model
    that the published data knows (e.g. ``llava-hf/llava-1.5-7b-hf``) is used, else llava-1.5-7b. A published
    benchmark that a measured task measures lands in that task's column (see :mod:`prunebench.report.published`).
    ``all_cells``: also the records of a run folder that its ``plan.json`` no longer lists.
    """
    rows = [_row(run, rec) for run, rec in load_records(store_or_records_or_paths, all_cells=all_cells)]
    _fill_relacc(rows)
    tasks: list[str] = []
    for r in rows:
        tasks += [t for t in r["_scores"] if t not in tasks]
    task_baselines: dict[str, dict[str, float]] = {}
    records = []
    for r in rows:
        scores, baselines = r.pop("_scores"), r.pop("_baselines")
        ref = task_baselines.setdefault(f"{r['run']}|{r['model']}|{r['suite']}", {})
        ref.update({t: b for t, b in baselines.items() if not math.isnan(b) and t not in ref})
        records.append(r | {t: scores.get(t, math.nan) for t in tasks})
    df = pd.DataFrame.from_records(records, columns=META_COLUMNS + tasks + METRIC_COLUMNS + EXTRA_COLUMNS)
    if with_published:
        from prunebench.report.published import published_rows, resolve_model

        if published_model is None:
            found = [resolve_model(str(m)) for m in df["model"].unique()]
            published_model = next((m for m in found if m), "llava-1.5-7b")
        pub = published_rows(published_model, source=published_source, tasks=tasks)
        if pub.empty:
            log.warning("no published numbers for model %r", published_model)
        pub_tasks = [c for c in pub.columns if c not in df.columns and c not in META_COLUMNS + METRIC_COLUMNS + EXTRA_COLUMNS]
        tasks += pub_tasks
        df = pd.concat([df.astype(object), pub.astype(object)], ignore_index=True) if len(df) else pub
        df = df.reindex(columns=META_COLUMNS + tasks + METRIC_COLUMNS + EXTRA_COLUMNS)
    for col in tasks + METRIC_COLUMNS + ["tokens_final", "tokens_layer_average", "prefill_p90_ms", "latency_n", "load_per_core"]:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    df["budget"] = pd.array([None if (b is None or (isinstance(b, float) and math.isnan(b))) else int(b) for b in df["budget"]], dtype="Int64")
    for col in (
        "run",
        "source",
        "model",
        "suite",
        "method",
        "label",
        "params",
        "budget_mode",
        "status",
        "error",
        "tflops_source",
        "latency_source",
        "limit",
        "seed",
        "printed",
        "latency_flag",
    ):
        df[col] = df[col].fillna("").astype(str)
    df = _sort(df)
    df["label"] = _assign_labels(df)
    df.attrs["tasks"] = tasks
    df.attrs["task_baselines"] = {k: v for k, v in task_baselines.items() if v}
    return df


def _sort(df: pd.DataFrame) -> pd.DataFrame:
    """Measured rows first, then each published source; within each, model, baseline first, budgets descending."""
    key = pd.DataFrame(
        {
            "pub": (df["source"] != MEASURED).astype(int),
            "source": df["source"],
            "model": df["model"],
            "base": (df["method"] != BASELINE_METHOD).astype(int),
            "mode": df["budget_mode"],
            "budget": -df["budget"].astype("Float64").fillna(1e9),
            "method": df["method"],
            "run": df["run"],
            "params": df["params"],
            "limit": df["limit"],
            "seed": df["seed"],
        }
    )
    order = key.sort_values(list(key.columns), kind="stable").index
    return df.loc[order].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------------
# ranking (bold / underline)


def ranks(df: pd.DataFrame, decimals: dict[str, int] | None = None) -> pd.DataFrame:
    """1 = best, 2 = second best of each value column within each budget group; 0 = not ranked.

    Groups are (model, suite, budget mode, budget) over the measured, finished, pruned rows (the unpruned baseline
    and published rows are references, not contenders). Scores, RelAcc and agreement rank higher-is-better;
    prefill ms, TFLOPs and KV MB lower-is-better. Values are compared as printed (``decimals``, default
    :func:`value_decimals`), so two cells that read the same get the same mark. A cost of another kind than the
    group's preferred one (an analytic TFLOPs among measured ones, a prefill time among TTFTs) is not ranked.
    Ties share a rank. A best needs at least two rows to compare; a second best needs three distinct values.
    """
    cols = task_columns(df) + METRIC_COLUMNS
    decimals = value_decimals(df) if decimals is None else decimals
    out = pd.DataFrame(0, index=df.index, columns=cols)
    contenders = df[(df["source"] == MEASURED) & (df["status"] == "done") & (df["method"] != BASELINE_METHOD)]
    for _, group in contenders.groupby(["model", "suite", "budget_mode", "budget"], dropna=False):
        if len(group) < 2:
            continue
        for col in cols:
            values = group[col].dropna()
            if col in PREFERRED_SOURCE and len(values):
                kind_col, preferred = PREFERRED_SOURCE[col]
                kinds = group.loc[values.index, kind_col]
                if (kinds == preferred).any():
                    values = values[kinds == preferred]
                else:  # all of the fallback kind: rank those among themselves
                    values = values[kinds == kinds.iloc[0]]
            if len(values) < 2:
                continue
            digits = decimals.get(col, 6)
            shown = values.map(lambda v, digits=digits: round(float(v), digits))
            distinct = sorted(shown.unique(), reverse=HIGHER_IS_BETTER.get(col, True))
            if len(distinct) < 2:
                continue  # every row ties: nothing stands out
            out.loc[shown.index[shown == distinct[0]], col] = 1
            if len(distinct) >= 3:
                out.loc[shown.index[shown == distinct[1]], col] = 2
    return out


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of the leaderboard (failed / infeasible cells shown as such); below it a note
    on random weights where a model has them, the footnotes of its marks and its legend."""
    df = for_display(df)
    table = _markdown_table(df)
    head = random_weights_note(df)
    notes = cost_notes(df)
    out = table + "\n" + (f"\n**Note: {head}**\n" if head else "")
    out += "".join(f"\n{n}\n" for n in notes)
    out += "\nLegend: " + " ".join(legend(df)) + "\n"
    return out


def _markdown_table(df: pd.DataFrame) -> str:
    cols = display_columns(df)
    numeric = set(value_columns(df))
    decimals = value_decimals(df)
    lines = [
        "| " + " | ".join(title.replace("|", "\\|") for _, title in cols) + " |",
        "|" + "|".join("---:" if c in numeric or c == "budget" else "---" for c, _ in cols) + "|",
    ]
    for _, row in df.iterrows():
        cells = []
        printed = printed_text(row)
        for col, _ in cols:
            if col == "budget":
                text = budget_text(row)
            elif col == "status":
                text = status_text(row)
            elif col in numeric:
                if row["status"] in ("failed", "infeasible", MISSING):
                    text = row["status"]
                else:
                    text = cell_text(row, col, decimals[col], printed) + cost_mark(df, row, col)
            else:
                text = str(row[col])
            cells.append(text.replace("|", "\\|").replace("\n", " "))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_csv(df: pd.DataFrame) -> str:
    """Every column, raw numbers (RelAcc / agreement in percent), one row per cell."""
    return df.to_csv(index=False)
