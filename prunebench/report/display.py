"""The leaderboard's display layer: series labels, task columns, precision, cost units, cell text, column titles,
marks, footnotes and the legend. Moved out of :mod:`prunebench.report.leaderboard`, which re-exports every name."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable

import pandas as pd

from prunebench.models.catalog import RANDOM_WEIGHTS_NOTE, is_random_weights
from prunebench.report.records import (
    ANALYTIC_MARK,
    COLUMN_TITLES,
    EXTRA_COLUMNS,
    LATENCY_MARK,
    LOAD_PER_CORE_LIMIT,
    MEASURED,
    META_COLUMNS,
    METRIC_COLUMNS,
    MISSING,
    P90_RATIO_LIMIT,
    PREFILL_MARK,
    SCALE_DECIMALS,
    TASK_DECIMALS,
    display_name,
)
from prunebench.store import BASELINE_METHOD


def _assign_labels(df: pd.DataFrame) -> pd.Series:
    """Display label of each series: the method's paper name, plus only what tells its series apart.

    A series is one method with one parameter set, budget mode, suite, run, limit and seed; its label is the same
    at every budget (a plot line and its table rows share it). The budget mode and suite are named where a
    method has several, then (within one mode and suite) the run, the differing parameters and limit/seed.
    """
    labels = df["method"].map(display_name).astype(object)
    published = df["source"] != MEASURED
    labels[published] = df.loc[published, "label"]
    measured = df[~published]
    for _, group in measured.groupby(["model", "method"], dropna=False):
        if group["budget_mode"].nunique() > 1:
            labels[group.index] = labels[group.index] + " (" + group["budget_mode"] + ")"
        if group["suite"].nunique() > 1:
            labels[group.index] = labels[group.index] + " {" + group["suite"] + "}"
        for _, sub in group.groupby(["budget_mode", "suite"], dropna=False):
            if sub["run"].nunique() > 1:
                labels[sub.index] = labels[sub.index] + " [" + sub["run"] + "]"
            if sub["params"].nunique() > 1:
                labels[sub.index] = labels[sub.index] + " (" + _differing_params(sub["params"]) + ")"
            protocol = sub[["limit", "seed"]].astype(str)
            differing = [c for c in ("limit", "seed") if protocol[c].nunique() > 1]
            if differing:
                text = protocol[differing].apply(lambda r, cols=differing: ", ".join(f"{c}={r[c] or 'none'}" for c in cols), axis=1)
                labels[sub.index] = labels[sub.index] + " (" + text + ")"
    return labels


def series_columns() -> list[str]:
    """The columns that identify one series (one plot line): the leaderboard labels each series once."""
    return ["model", "method", "params", "budget_mode", "suite", "run", "limit", "seed", "source"]


def _differing_params(texts: pd.Series) -> pd.Series:
    """Per row, only the parameters that differ within the group ("k=default" where a row does not set k)."""
    parsed = []
    for text in texts:
        try:
            value = json.loads(text) if text else {}
        except (TypeError, ValueError):
            value = {"params": text}
        parsed.append(value if isinstance(value, dict) else {"params": value})
    keys = sorted({k for p in parsed for k in p})
    differing = [k for k in keys if len({json.dumps(p.get(k), sort_keys=True, default=str) for p in parsed}) > 1]
    return pd.Series([", ".join(f"{k}={p.get(k, 'default')}" for k in differing) for p in parsed], index=texts.index)


def task_columns(df: pd.DataFrame) -> list[str]:
    """The per-task score columns of a leaderboard, in table order."""
    tasks = df.attrs.get("tasks")
    if tasks is not None:
        return [t for t in tasks if t in df.columns]
    fixed = set(META_COLUMNS) | set(METRIC_COLUMNS) | set(EXTRA_COLUMNS)
    return [c for c in df.columns if c not in fixed]


# ---------------------------------------------------------------------------------------------------------
# text formats


def column_decimals(values: Iterable[float], column: str) -> int:
    """Decimals for a whole column: 1 for percentages; else three significant digits of the column's largest
    value (at least one decimal), or none when every value is a whole number (MME 1862, OCRBench 297)."""
    if column in ("relacc", "agreement"):
        return 1
    finite = [float(v) for v in values if v is not None and not pd.isna(v)]
    if not finite:
        return 1
    if column not in METRIC_COLUMNS and all(float(v).is_integer() for v in finite) and max(abs(v) for v in finite) >= 10:
        return 0
    largest = max(abs(v) for v in finite) or 1.0
    return int(min(6, max(1, 2 - math.floor(math.log10(largest)))))


def task_decimals(values: Iterable[float]) -> int:
    """One fixed precision per score scale, whatever the values: :data:`TASK_DECIMALS` for lmms-eval's 0-1 scores,
    :data:`SCALE_DECIMALS` for larger scales (0-100, MME's sums), none for whole-number scores (OCRBench 297)."""
    finite = [float(v) for v in values if v is not None and not pd.isna(v)]
    if not finite:
        return TASK_DECIMALS
    if all(v.is_integer() for v in finite) and max(abs(v) for v in finite) >= 10:
        return 0
    return TASK_DECIMALS if max(abs(v) for v in finite) <= 1.0 else SCALE_DECIMALS


def value_decimals(df: pd.DataFrame) -> dict[str, int]:
    """Decimals of every value column, from the measured rows (published cells print as the paper does)."""
    measured = df[df["source"] == MEASURED]
    out = {}
    tasks = task_columns(df)
    for col in tasks + METRIC_COLUMNS:
        base = measured[col] if measured[col].notna().any() else df[col]
        out[col] = task_decimals(base) if col in tasks else column_decimals(base, col)
    return out


# cost units: the records hold TFLOPs and MB (2**20 bytes); each table prints them in the unit that suits its values
FLOP_UNITS = ((1.0, "TFLOPs"), (1e3, "GFLOPs"))  # (factor from TFLOPs, name), largest first
BYTE_UNITS = ((1 / 1024, "GB"), (1.0, "MB"))  # (factor from MB, name), largest first
UNIT_COLUMNS = {"tflops": FLOP_UNITS, "kv_mb": BYTE_UNITS}


def choose_unit(values: Iterable[float], units: tuple[tuple[float, str], ...]) -> tuple[float, str]:
    """The largest unit in which the largest value is at least 1 (0.00057 TFLOPs -> 0.57 GFLOPs)."""
    finite = [abs(float(v)) for v in values if v is not None and not pd.isna(v)]
    largest = max(finite) if finite else 1.0
    for factor, name in units:
        if largest * factor >= 1.0:
            return factor, name
    return units[-1]


def display_units(df: pd.DataFrame) -> dict[str, tuple[float, str]]:
    """column -> (factor, unit) of the cost columns, chosen from the measured values of this table."""
    measured = df[df["source"] == MEASURED]
    out = {}
    for col, units in UNIT_COLUMNS.items():
        values = measured[col] if measured[col].notna().any() else df[col]
        out[col] = choose_unit(values, units)
    return out


def for_display(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with the cost columns in the units of :func:`display_units` (``attrs["units"]``), for the human tables.
    A published cell whose unit changes prints the converted number instead of the paper's text."""
    if "units" in df.attrs:
        return df
    units = display_units(df)
    out = df.copy()
    out.attrs = dict(df.attrs)
    for col, (factor, _) in units.items():
        out[col] = out[col] * factor
    if "printed" in out.columns:
        rescaled = [c for c, (factor, _) in units.items() if factor != 1.0]
        if rescaled:

            def drop(text: str) -> str:
                printed = printed_text(pd.Series({"printed": text}))
                return json.dumps({k: v for k, v in printed.items() if k not in rescaled}) if printed else text

            out["printed"] = out["printed"].map(drop)
    out.attrs["units"] = {col: unit for col, (_, unit) in units.items()}
    return out


def format_value(value: float, column: str, decimals: int | None = None) -> str:
    if value is None or pd.isna(value):
        return "—"
    if decimals is None:
        decimals = column_decimals([value], column)
    return f"{value:.{decimals}f}"


def printed_text(row: pd.Series) -> dict[str, str]:
    text = row.get("printed") if hasattr(row, "get") else None
    if not text:
        return {}
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return {}


def cell_text(row: pd.Series, column: str, decimals: int, printed: dict[str, str] | None = None) -> str:
    """The number as shown: a published cell verbatim (its own precision), a measured one at the column's."""
    printed = printed_text(row) if printed is None else printed
    if column in printed and not pd.isna(row[column]):
        return printed[column]
    return format_value(row[column], column, decimals)


def latency_title(df: pd.DataFrame) -> str:
    """'TTFT (ms)' when any measured row has a time to first token, else 'Prefill (ms)'."""
    measured = df[(df["source"] == MEASURED) & df["prefill_ms"].notna()]
    return "TTFT (ms)" if (measured["latency_source"] == "ttft").any() else "Prefill (ms)"


def column_title(df: pd.DataFrame, column: str) -> str:
    if column == "prefill_ms":
        return latency_title(df)
    unit = (df.attrs.get("units") or {}).get(column)
    if column == "tflops" and unit:
        return unit
    if column == "kv_mb" and unit:
        return f"KV ({unit})"
    return COLUMN_TITLES.get(column, column)


def cost_mark(df: pd.DataFrame, row: pd.Series, column: str) -> str:
    """† on analytic TFLOPs, * on a prefill time in a TTFT column (measured rows only)."""
    if row["source"] != MEASURED or pd.isna(row[column]):
        return ""
    if column == "tflops" and row.get("tflops_source") == "analytic":
        return ANALYTIC_MARK
    if column == "prefill_ms":
        mark = PREFILL_MARK if row.get("latency_source") == "prefill" and latency_title(df).startswith("TTFT") else ""
        return mark + (LATENCY_MARK if row.get("latency_flag") else "")
    return ""


def budget_text(row: pd.Series) -> str:
    if pd.isna(row["budget"]):
        if row["method"] == BASELINE_METHOD:
            tokens = row.get("tokens_final")
            return f"all ({int(tokens)})" if tokens is not None and not pd.isna(tokens) else "all"
        return "—"
    return str(int(row["budget"]))


def status_text(row: pd.Series) -> str:
    status = row["status"]
    if status == "failed" and row.get("error"):
        first = str(row["error"]).strip().splitlines()[0] if str(row["error"]).strip() else ""
        return f"failed: {first[:60]}" if first else "failed"
    return status


def value_columns(df: pd.DataFrame) -> list[str]:
    """Task and metric columns with at least one value in ``df`` (a column no row fills is left out)."""
    return [c for c in task_columns(df) + METRIC_COLUMNS if df[c].notna().any()]


def display_columns(df: pd.DataFrame) -> list[tuple[str, str]]:
    """(column, title) pairs of the human tables."""
    cols = [("label", "Method"), ("budget", "Budget")]
    if df.loc[df["source"] == MEASURED, "run"].nunique() > 1:
        cols.append(("run", "Run"))
    if (df["source"] != MEASURED).any():
        cols.append(("source", "Source"))
    if (df["status"].isin(["failed", "infeasible", MISSING])).any():
        cols.append(("status", "Status"))
    values = value_columns(df)
    cols += [(t, t) for t in task_columns(df) if t in values]
    cols += [(c, column_title(df, c)) for c in METRIC_COLUMNS if c in values]
    return cols


def cost_notes(df: pd.DataFrame) -> list[str]:
    """The footnotes the marks in ``df``'s tables need."""
    notes = []
    measured = df[(df["source"] == MEASURED) & (df["status"] == "done")]
    if (measured["tflops"].notna() & (measured["tflops_source"] == "analytic")).any():
        notes.append(
            f"{ANALYTIC_MARK} {column_title(df, 'tflops')} computed analytically from the config and the measured token counts "
            "(no counted FLOPs for that cell); ranked only among analytic values."
        )
    if latency_title(df).startswith("TTFT") and (measured["prefill_ms"].notna() & (measured["latency_source"] == "prefill")).any():
        notes.append(f"{PREFILL_MARK} LLM prefill time (the record has no time to first token); ranked only among prefill times.")
    if "latency_flag" in measured.columns and (measured["prefill_ms"].notna() & (measured["latency_flag"] != "")).any():
        flagged = measured[measured["prefill_ms"].notna() & (measured["latency_flag"] != "")]
        cells = "; ".join(f"{r['label']}@{budget_text(r)}: {r['latency_flag']}" for _, r in flagged.head(4).iterrows())
        more = f"; {len(flagged) - 4} more" if len(flagged) > 4 else ""
        notes.append(
            f"{LATENCY_MARK} unreliable latency: p90/median above {P90_RATIO_LIMIT:g} or CPU load above "
            f"{LOAD_PER_CORE_LIMIT:g} per core while measuring ({cells}{more}); rerun on a quiet machine."
        )
    return notes


def random_weight_models(df: pd.DataFrame) -> list[str]:
    """The measured models of ``df`` that run on random weights (the tiny test models)."""
    return [m for m in dict.fromkeys(df.loc[df["source"] == MEASURED, "model"]) if m and is_random_weights(m)]


def random_weights_note(df: pd.DataFrame, hint: bool = True) -> str:
    """The warning a table of a random-weight model carries ("" for real models)."""
    models = random_weight_models(df)
    if not models:
        return ""
    return f"{', '.join(models)}: {RANDOM_WEIGHTS_NOTE}" + (" (`prunebench models` lists the real models)." if hint else ".")


def legend(df: pd.DataFrame) -> list[str]:
    """Short definitions of what the table shows: its columns (in the units printed) and its markers.

    ``df`` as printed (:func:`for_display`, so the cost units are the table's)."""
    shown = {c for c, _ in display_columns(df)}
    measured = df[df["source"] == MEASURED]
    parts = []
    if any(t in shown for t in task_columns(df)):
        parts.append(f"task columns: each task's primary lmms-eval metric (0-1 scores at {TASK_DECIMALS} decimals)")
    modes = sorted({m for m in measured["budget_mode"] if m})
    if "budget" in shown:
        how = {"average": "averaged over the LLM layers", "final": "after the last pruning stage"}
        text = "; ".join(f"{how.get(m, m)}" for m in modes)
        parts.append(f"Budget: visual tokens kept per image{' (' + text + ')' if text else ''}; all (N): unpruned, N visual tokens")
    if "relacc" in shown:
        parts.append("RelAcc: mean over tasks of score / unpruned score, in %")
    if "agreement" in shown:
        parts.append("Agree.: answers identical to the unpruned model's, in %")
    if "prefill_ms" in shown:
        what = "time to first token" if latency_title(df).startswith("TTFT") else "LLM prefill time"
        parts.append(f"{latency_title(df).split(' ')[0]}: median {what} of one input over the latency probe, in ms")
    if "tflops" in shown:
        parts.append(f"{column_title(df, 'tflops')}: floating-point operations of one input's prefill (counted)")
    if "kv_mb" in shown:
        unit = (df.attrs.get("units") or {}).get("kv_mb", "MB")
        parts.append(f"KV: key/value cache after the prefill, in {unit} (1 MB = 2^20 bytes)")
    if "status" in shown:
        parts.append(
            "infeasible: the method cannot meet that budget in this budget mode; failed: the cell raised"
            + ("; missing: planned, but no valid record (not run yet, interrupted or damaged)" if (df["status"] == MISSING).any() else "")
        )
    if (df["source"] != MEASURED).any():
        parts.append("published rows are quoted from the papers (their own conventions) and not ranked")
    return [p[0].upper() + p[1:] + "." for p in parts]
