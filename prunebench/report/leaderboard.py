"""Leaderboard: one row per cell (method x budget, plus the unpruned baseline), derived from result stores.

The DataFrame is the single source of every output (Markdown, CSV, LaTeX, plots). Its columns:

    run, source, model, suite, method, label, params, budget, budget_mode, status, error,
    <one column per task: that task's score>, relacc, agreement, prefill_ms, tflops, kv_mb,
    tokens_final, tokens_layer_average

``relacc`` and ``agreement`` are in percent (records hold ratios: 1.0 = the unpruned model). ``tflops`` is the
measured count, falling back to the analytic one (``tflops_source`` says which). Failed and infeasible cells keep
their row with empty metrics and their ``status``/``error``; nothing is dropped silently. The task columns are
listed in ``df.attrs["tasks"]`` (see :func:`task_columns`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from prunebench.core import PruneBenchError
from prunebench.store import BASELINE_METHOD, ResultStore

log = logging.getLogger(__name__)

META_COLUMNS = ["run", "source", "model", "suite", "method", "label", "params", "budget", "budget_mode", "status", "error"]
METRIC_COLUMNS = ["relacc", "agreement", "prefill_ms", "tflops", "kv_mb"]
EXTRA_COLUMNS = ["tflops_source", "tokens_final", "tokens_layer_average"]
HIGHER_IS_BETTER = {"relacc": True, "agreement": True, "prefill_ms": False, "tflops": False, "kv_mb": False}
COLUMN_TITLES = {"relacc": "RelAcc (%)", "agreement": "Agree. (%)", "prefill_ms": "Prefill (ms)", "tflops": "TFLOPs", "kv_mb": "KV (MB)"}
MEASURED = "measured"

# How papers write the names; a method class may override with a ``display_name`` attribute.
DISPLAY_NAMES = {
    "none": "Unpruned", "fastv": "FastV", "visionzip": "VisionZip", "visionzip-ft": "VisionZip‡", "random": "Random",
    "sparsevlm": "SparseVLM", "vispruner": "VisPruner", "divprune": "DivPrune", "hiprune": "HiPrune", "hiprune++": "HiPrune++",
    "learnpruner": "LearnPruner", "dart": "DART", "pdrop": "PDrop", "twigvlm": "TwigVLM", "tome": "ToMe",
    "prumerge+": "PruMerge+", "fastervlm": "FasterVLM", "mustdrop": "MustDrop", "hired": "HiRED", "trim": "TRIM",
}


def _method_class(name: str):
    try:
        from prunebench.registry import get_method_class

        return get_method_class(name)
    except Exception:  # unknown or plugin that is not installed here: the report still works
        return None


def display_name(method: str) -> str:
    cls = _method_class(method) if method != BASELINE_METHOD else None
    custom = getattr(cls, "display_name", None) if cls is not None else None
    return custom or DISPLAY_NAMES.get(method, method)


def citation_key(method: str) -> str:
    """The method class's bibtex key (``citation``), or "" for unknown methods and plugins without one."""
    if method == BASELINE_METHOD:
        return ""
    cls = _method_class(method)
    return str(getattr(cls, "citation", "") or "") if cls is not None else ""


# ---------------------------------------------------------------------------------------------------------
# loading


def _run_label(path: Path) -> str:
    path = path.resolve()
    return path.name or str(path)


def load_records(source: Any) -> list[tuple[str, dict[str, Any]]]:
    """``(run label, record)`` pairs from a ResultStore, a run folder path, a list of either, or record dicts."""
    if isinstance(source, (ResultStore, str, os.PathLike)):
        source = [source]
    if isinstance(source, dict):
        source = [source]
    items: list[tuple[str, dict[str, Any]]] = []
    labels: dict[str, Path] = {}
    for item in source:
        if isinstance(item, dict):
            items.append((str(item.get("run") or "records"), item))
            continue
        store = item if isinstance(item, ResultStore) else ResultStore(item)
        if not store.exists():
            raise PruneBenchError(
                f"no results store at {store.root} (expected {store.root / 'cells'}/*.json); pass the folder a "
                f"`prunebench run` wrote its results to, e.g. results/NAME")
        label = _run_label(store.root)
        if label in labels and labels[label] != store.root.resolve():  # two runs called "latest" in different places
            label = f"{store.root.resolve().parent.name}/{label}"
        labels[label] = store.root.resolve()
        items += [(label, rec) for rec in store.records()]
    return items


# ---------------------------------------------------------------------------------------------------------
# record -> row


def _num(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def _get(record: dict, *path: str) -> Any:
    node: Any = record
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _percent(value: Any) -> float:
    """Records hold ratios (RelAcc 1.0 = the unpruned model; agreement is a share), tables show percent. No
    guessing from the magnitude: a RelAcc of 2.5 (a task the unpruned model nearly fails) is 250 %."""
    return 100.0 * _num(value)


def _params_text(params: Any) -> str:
    if not params:
        return ""
    if isinstance(params, dict):
        return json.dumps(params, sort_keys=True, default=str)
    return str(params)


def _row(run: str, record: dict[str, Any]) -> dict[str, Any]:
    method = str(record.get("method") or BASELINE_METHOD)
    budget = record.get("budget")
    tflops = _num(_get(record, "flops", "measured_tflops"))
    tflops_source = "measured"
    if math.isnan(tflops):
        tflops = _num(_get(record, "flops", "analytic_tflops"))
        tflops_source = "analytic" if not math.isnan(tflops) else ""
    status = str(record.get("status") or "done")
    row = {
        "run": run,
        "source": MEASURED,
        "model": record.get("model") or "",
        "suite": record.get("suite") or "",
        "method": method,
        "label": "",
        "params": _params_text(record.get("method_params")),
        "budget": None if budget is None else int(budget),
        "budget_mode": record.get("budget_mode") or "",
        "status": status,
        "error": "" if record.get("error") is None else str(record.get("error")),
        "relacc": _percent(record.get("relacc")),
        "agreement": _percent(record.get("agreement")),
        "prefill_ms": _num(_get(record, "latency_ms", "prefill", "median")),
        "tflops": tflops,
        "kv_mb": _num(_get(record, "kv_cache", "measured_mb")),
        "tflops_source": tflops_source,
        "tokens_final": _num(_get(record, "tokens", "final")),
        "tokens_layer_average": _num(_get(record, "tokens", "layer_average")),
    }
    tasks = record.get("tasks") or {}
    scores = {t: _num((v or {}).get("score")) for t, v in tasks.items()} if isinstance(tasks, dict) else {}
    baselines = {t: _num((v or {}).get("baseline")) for t, v in tasks.items()} if isinstance(tasks, dict) else {}
    if status != "done":  # a failed cell may hold partial numbers; they are not results
        for key in METRIC_COLUMNS:
            row[key] = math.nan
        scores = {t: math.nan for t in scores}
    for t in record.get("task_names") or []:
        scores.setdefault(t, math.nan)
    return row | {"_scores": scores, "_baselines": baselines}


def _fill_relacc(rows: list[dict[str, Any]]) -> None:
    """RelAcc = mean over tasks of score / unpruned score, where the record did not carry it."""
    base: dict[tuple, dict[str, float]] = {}
    for r in rows:
        if r["method"] == BASELINE_METHOD and r["status"] == "done":
            base.setdefault((r["run"], r["model"], r["suite"]), r["_scores"])
    for r in rows:
        if r["status"] != "done":
            continue
        if r["method"] == BASELINE_METHOD:
            if math.isnan(r["relacc"]):
                r["relacc"] = 100.0
            if math.isnan(r["agreement"]):
                r["agreement"] = 100.0
            continue
        if not math.isnan(r["relacc"]):
            continue
        ref = base.get((r["run"], r["model"], r["suite"]), {})
        ratios = []
        for task, score in r["_scores"].items():
            b = r["_baselines"].get(task, math.nan)
            if math.isnan(b):
                b = ref.get(task, math.nan)
            if not math.isnan(score) and not math.isnan(b) and b != 0:
                ratios.append(score / b)
        if ratios:
            r["relacc"] = 100.0 * sum(ratios) / len(ratios)


def _assign_labels(df: pd.DataFrame) -> pd.Series:
    """Display label: the method's paper name, plus the run (or parameters) where rows would collide."""
    labels = df["method"].map(display_name).astype(object)
    published = df["source"] != MEASURED
    labels[published] = df.loc[published, "label"]
    measured = df[~published].assign(_budget=df["budget"].astype("Float64").fillna(-1))
    for _, group in measured.groupby(["model", "method", "_budget"], dropna=False):
        if group["budget_mode"].nunique() > 1:
            labels[group.index] = labels[group.index] + " (" + group["budget_mode"] + ")"
        if group["suite"].nunique() > 1:
            labels[group.index] = labels[group.index] + " {" + group["suite"] + "}"
    for _, group in measured.groupby(["model", "method", "_budget", "budget_mode", "suite"], dropna=False):
        if len(group) < 2:
            continue
        if group["run"].nunique() > 1:
            labels[group.index] = labels[group.index] + " [" + group["run"] + "]"
        if group["params"].nunique() > 1:
            labels[group.index] = labels[group.index] + " (" + _differing_params(group["params"]) + ")"
    return labels


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


def leaderboard(store_or_records_or_paths: Any, with_published: bool = False, *, published_model: str | None = None,
                published_source: str | None = None) -> pd.DataFrame:
    """The leaderboard of one or several runs.

    ``store_or_records_or_paths``: a :class:`ResultStore`, a run folder, record dicts, or a list of those (several
    runs are combined; rows whose method and budget collide keep their run label). ``with_published`` adds the
    seed papers' published numbers for ``published_model`` (``published_source``: substring of paper/table to
    keep), marked ``source = "published: <paper> <table>"``. Without ``published_model``, the first measured model
    that the published data knows (e.g. ``llava-hf/llava-1.5-7b-hf``) is used, else llava-1.5-7b.
    """
    rows = [_row(run, rec) for run, rec in load_records(store_or_records_or_paths)]
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
        pub = published_rows(published_model, source=published_source)
        if pub.empty:
            log.warning("no published numbers for model %r", published_model)
        pub_tasks = [c for c in pub.columns if c not in df.columns and c not in META_COLUMNS + METRIC_COLUMNS + EXTRA_COLUMNS]
        tasks += pub_tasks
        df = pd.concat([df.astype(object), pub.astype(object)], ignore_index=True) if len(df) else pub
        df = df.reindex(columns=META_COLUMNS + tasks + METRIC_COLUMNS + EXTRA_COLUMNS)
    for col in tasks + METRIC_COLUMNS + ["tokens_final", "tokens_layer_average"]:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    df["budget"] = pd.array([None if (b is None or (isinstance(b, float) and math.isnan(b))) else int(b) for b in df["budget"]], dtype="Int64")
    for col in ("run", "source", "model", "suite", "method", "label", "params", "budget_mode", "status", "error", "tflops_source"):
        df[col] = df[col].fillna("").astype(str)
    df = _sort(df)
    df["label"] = _assign_labels(df)
    df.attrs["tasks"] = tasks
    df.attrs["task_baselines"] = {k: v for k, v in task_baselines.items() if v}
    return df


def _sort(df: pd.DataFrame) -> pd.DataFrame:
    """Measured rows first, then each published source; within each, model, baseline first, budgets descending."""
    key = pd.DataFrame({
        "pub": (df["source"] != MEASURED).astype(int),
        "source": df["source"],
        "model": df["model"],
        "base": (df["method"] != BASELINE_METHOD).astype(int),
        "mode": df["budget_mode"],
        "budget": -df["budget"].astype("Float64").fillna(1e9),
        "method": df["method"],
        "run": df["run"],
        "params": df["params"],
    })
    order = key.sort_values(list(key.columns), kind="stable").index
    return df.loc[order].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------------
# ranking (bold / underline)


def ranks(df: pd.DataFrame) -> pd.DataFrame:
    """1 = best, 2 = second best of each value column within each budget group; 0 = not ranked.

    Groups are (model, suite, budget mode, budget) over the measured, finished, pruned rows (the unpruned baseline and published
    rows are references, not contenders). Scores, RelAcc and agreement rank higher-is-better; prefill ms,
    TFLOPs and KV MB lower-is-better. Ties share a rank. A best needs at least two rows to compare; a second
    best needs at least three distinct values.
    """
    cols = task_columns(df) + METRIC_COLUMNS
    out = pd.DataFrame(0, index=df.index, columns=cols)
    contenders = df[(df["source"] == MEASURED) & (df["status"] == "done") & (df["method"] != BASELINE_METHOD)]
    for _, group in contenders.groupby(["model", "suite", "budget_mode", "budget"], dropna=False):
        if len(group) < 2:
            continue
        for col in cols:
            values = group[col].dropna()
            if len(values) < 2:
                continue
            distinct = sorted(values.unique(), reverse=HIGHER_IS_BETTER.get(col, True))
            if len(distinct) < 2:
                continue  # every row ties: nothing stands out
            out.loc[values.index[values == distinct[0]], col] = 1
            if len(distinct) >= 3:
                out.loc[values.index[values == distinct[1]], col] = 2
    return out


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
    if all(float(v).is_integer() for v in finite) and max(abs(v) for v in finite) >= 10:
        return 0
    largest = max(abs(v) for v in finite) or 1.0
    return int(min(6, max(1, 2 - math.floor(math.log10(largest)))))


def format_value(value: float, column: str, decimals: int | None = None) -> str:
    if value is None or pd.isna(value):
        return "—"
    if decimals is None:
        decimals = column_decimals([value], column)
    return f"{value:.{decimals}f}"


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


def display_columns(df: pd.DataFrame) -> list[tuple[str, str]]:
    """(column, title) pairs of the human tables."""
    cols = [("label", "Method"), ("budget", "Budget")]
    if df.loc[df["source"] == MEASURED, "run"].nunique() > 1:
        cols.append(("run", "Run"))
    if (df["source"] != MEASURED).any():
        cols.append(("source", "Source"))
    if (df["status"].isin(["failed", "infeasible"])).any():
        cols.append(("status", "Status"))
    cols += [(t, t) for t in task_columns(df)]
    cols += [(c, COLUMN_TITLES[c]) for c in METRIC_COLUMNS]
    return cols


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of the leaderboard (failed / infeasible cells shown as such)."""
    cols = display_columns(df)
    numeric = set(task_columns(df)) | set(METRIC_COLUMNS)
    decimals = {c: column_decimals(df[c], c) for c in numeric}
    lines = ["| " + " | ".join(title.replace("|", "\\|") for _, title in cols) + " |",
             "|" + "|".join("---:" if c in numeric or c == "budget" else "---" for c, _ in cols) + "|"]
    for _, row in df.iterrows():
        cells = []
        for col, _ in cols:
            if col == "budget":
                text = budget_text(row)
            elif col == "status":
                text = status_text(row)
            elif col in numeric:
                text = row["status"] if row["status"] in ("failed", "infeasible") else format_value(row[col], col, decimals[col])
            else:
                text = str(row[col])
            cells.append(text.replace("|", "\\|").replace("\n", " "))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(df: pd.DataFrame) -> str:
    """Every column, raw numbers (RelAcc / agreement in percent), one row per cell."""
    return df.to_csv(index=False)
