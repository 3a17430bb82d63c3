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

import json
import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from prunebench.core import PruneBenchError
from prunebench.models.catalog import RANDOM_WEIGHTS_NOTE, is_random_weights
from prunebench.store import BASELINE_METHOD, ResultStore

log = logging.getLogger(__name__)

META_COLUMNS = ["run", "source", "model", "suite", "method", "label", "params", "budget", "budget_mode", "status", "error"]
METRIC_COLUMNS = ["relacc", "agreement", "prefill_ms", "tflops", "kv_mb"]
EXTRA_COLUMNS = [
    "tflops_source",
    "latency_source",
    "tokens_final",
    "tokens_layer_average",
    "limit",
    "seed",
    "printed",
    "prefill_p90_ms",
    "latency_n",
    "load_per_core",
    "latency_flag",
]
HIGHER_IS_BETTER = {"relacc": True, "agreement": True, "prefill_ms": False, "tflops": False, "kv_mb": False}
COLUMN_TITLES = {"relacc": "RelAcc (%)", "agreement": "Agree. (%)", "prefill_ms": "Prefill (ms)", "tflops": "TFLOPs", "kv_mb": "KV (MB)"}
MEASURED = "measured"
ANALYTIC_MARK = "†"  # TFLOPs computed from the config, not counted
PREFILL_MARK = "*"  # LLM prefill time standing in a TTFT column
LATENCY_MARK = "§"  # a latency the measurement itself says is unreliable (spread or machine load)
P90_RATIO_LIMIT = 1.5  # p90 / median above this: the samples scatter too much for the median to mean much
LOAD_PER_CORE_LIMIT = 1.5  # 1-min load average per CPU core above this during the measurement: a busy machine
TASK_DECIMALS = 3  # task scores on lmms-eval's 0-1 scale; other scales print with SCALE_DECIMALS
SCALE_DECIMALS = 1
# The kind of each cost that is ranked when a group mixes kinds: one kind is never ranked against another.
PREFERRED_SOURCE = {"tflops": ("tflops_source", "measured"), "prefill_ms": ("latency_source", "ttft")}

# How papers write the names; a method class may override with a ``display_name`` attribute.
DISPLAY_NAMES = {
    "none": "Unpruned",
    "fastv": "FastV",
    "visionzip": "VisionZip",
    "visionzip-ft": "VisionZip‡",
    "random": "Random",
    "sparsevlm": "SparseVLM",
    "vispruner": "VisPruner",
    "divprune": "DivPrune",
    "hiprune": "HiPrune",
    "hiprune++": "HiPrune++",
    "learnpruner": "LearnPruner",
    "dart": "DART",
    "pdrop": "PDrop",
    "twigvlm": "TwigVLM",
    "tome": "ToMe",
    "prumerge+": "PruMerge+",
    "fastervlm": "FasterVLM",
    "mustdrop": "MustDrop",
    "hired": "HiRED",
    "trim": "TRIM",
    "prumerge": "PruMerge",
    "ficoco-v": "FiCoCo-V",
    "globalcom2": "GlobalCom2",
    "no-visual-tokens": "0 visual tokens",
}
# BibTeX keys (data/references.bib) of methods that appear only in published data (registered methods carry
# their own ``citation``). Methods whose paper the reference documents do not identify have none.
PUBLISHED_CITATIONS = {
    "visionzip-ft": "yang2025visionzip",
    "dart": "wen2025dart",
    "pdrop": "xing2025pyramiddrop",
    "tome": "bolya2023tome",
    "prumerge+": "shang2024prumerge",
    "prumerge": "shang2024prumerge",
    "twigvlm": "shao2025twigvlm",
    "hiprune++": "liu2025hiprune",
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
    key = str(getattr(cls, "citation", "") or "") if cls is not None else ""
    return key or PUBLISHED_CITATIONS.get(method, "")


# ---------------------------------------------------------------------------------------------------------
# loading


def _run_label(path: Path) -> str:
    path = path.resolve()
    return path.name or str(path)


def planned_keys(store: ResultStore) -> set[str] | None:
    """Cell keys of the run's ``plan.json`` (None when the folder has none, e.g. a store written by hand)."""
    path = store.root / "plan.json"
    if not path.exists():
        return None
    try:
        plan = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PruneBenchError(f"{path} is not readable JSON ({exc}); rerun `prunebench run` or pass --all to read every cell") from None
    return {str(cell["key"]) for cell in plan if isinstance(cell, dict) and "key" in cell}


def load_records(source: Any, all_cells: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """``(run label, record)`` pairs from a ResultStore, a run folder path, a list of either, or record dicts.

    A run folder contributes the cells of its ``plan.json`` only (a folder reused for another sweep keeps the
    old records in ``cells/``); ``all_cells=True`` reads every record.
    """
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
                f"`prunebench run` wrote its results to, e.g. results/NAME"
            )
        label = _run_label(store.root)
        if label in labels and labels[label] != store.root.resolve():  # two runs called "latest" in different places
            label = f"{store.root.resolve().parent.name}/{label}"
        labels[label] = store.root.resolve()
        records = list(store.records())
        keys = None if all_cells else planned_keys(store)
        if keys is not None:
            kept = [r for r in records if r.get("key") in keys]
            if len(kept) < len(records):
                log.info("%s: %d record(s) in cells/ are not in plan.json (an earlier sweep); shown with --all", store.root, len(records) - len(kept))
            records = kept
            store.report_missing()  # planned cells without a valid record (missing or damaged) are named, not silently dropped
        records += missing_records(store, records)
        items += [(label, rec) for rec in records]
    return items


MISSING = "missing"  # status of a planned cell without a valid record (not run yet, or its record is damaged)


def missing_records(store: ResultStore, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stand-in records (status "missing") for the cells of the run's ``plan.json`` that have no valid record: not run
    yet, interrupted, or damaged (the store's ``missing_or_damaged`` says which, where it has it)."""
    path = store.root / "plan.json"
    if not path.exists():
        return []
    try:
        plan = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return []
    plan = [c for c in plan if isinstance(c, dict) and "key" in c] if isinstance(plan, list) else []
    have = {r.get("key") for r in records}
    lister = getattr(store, "missing_or_damaged", None)
    reasons: dict[str, str] = {}
    if callable(lister):
        try:
            reasons = {str(m["key"]): f"{m.get('state')}: {m.get('reason')}" if m.get("reason") else str(m.get("state")) for m in lister(plan)}
        except Exception:
            reasons = {}
    common = next((r for r in records if r.get("method") != BASELINE_METHOD), records[0] if records else {})
    out = []
    for cell in plan:
        key = str(cell["key"])
        if key in have:
            continue
        method = str(cell.get("method") or BASELINE_METHOD)
        out.append(
            {
                "key": key,
                "status": MISSING,
                "method": method,
                "budget": cell.get("budget"),
                "model": common.get("model"),
                "suite": common.get("suite"),
                "task_names": common.get("task_names") or [],
                "budget_mode": None if method == BASELINE_METHOD else common.get("budget_mode"),
                "budget_scope": None if method == BASELINE_METHOD else common.get("budget_scope"),
                "limit": common.get("limit"),
                "seed": common.get("seed"),
                "method_params": {},
                "error": reasons.get(key) or "no record: not run yet, interrupted, or damaged",
            }
        )
    return out


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
    latency = record.get("latency_ms") or {}
    ttft = _num(_get(latency, "ttft", "median"))
    if math.isnan(ttft):
        ttft = _num(_get(latency, "ttft_ms", "median"))
    prefill = ttft if not math.isnan(ttft) else _num(_get(latency, "prefill", "median"))
    latency_source = "ttft" if not math.isnan(ttft) else ("prefill" if not math.isnan(prefill) else "")
    stat = (latency.get("ttft") or latency.get("ttft_ms") or {}) if latency_source == "ttft" else (latency.get("prefill") or {})
    stat = stat if isinstance(stat, dict) else {}
    p90, count = _num(stat.get("p90")), _num(stat.get("n"))
    load = load_per_core(record)
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
        "prefill_ms": prefill,
        "tflops": tflops,
        "kv_mb": _num(_get(record, "kv_cache", "measured_mb")),
        "tflops_source": tflops_source,
        "latency_source": latency_source,
        "tokens_final": _num(_get(record, "tokens", "final")),
        "tokens_layer_average": _num(_get(record, "tokens", "layer_average")),
        "limit": "" if record.get("limit") is None else str(record.get("limit")),
        "seed": "" if record.get("seed") is None else str(record.get("seed")),
        "printed": "",
        "prefill_p90_ms": p90,
        "latency_n": count,
        "load_per_core": load,
        "latency_flag": latency_flag(prefill, p90, load),
    }
    tasks = record.get("tasks") or {}
    scores = {t: _num((v or {}).get("score")) for t, v in tasks.items()} if isinstance(tasks, dict) else {}
    baselines = {t: _num((v or {}).get("baseline")) for t, v in tasks.items()} if isinstance(tasks, dict) else {}
    if status != "done":  # a failed cell may hold partial numbers; they are not results
        for key in METRIC_COLUMNS:
            row[key] = math.nan
        row["latency_flag"] = ""
        scores = {t: math.nan for t in scores}
    for t in record.get("task_names") or []:
        scores.setdefault(t, math.nan)
    return row | {"_scores": scores, "_baselines": baselines}


def _numbers(value: Any) -> list[float]:
    """Every finite number in a value, a list of values or a mapping of them (a load average may be recorded as one
    number, as the (1, 5, 15)-minute triple, or before/after the measurement)."""
    if isinstance(value, dict):
        return [x for v in value.values() for x in _numbers(v)]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _numbers(v)]
    number = _num(value)
    return [] if math.isnan(number) or isinstance(value, bool) else [number]


LOAD_FIELDS = ("load_average", "loadavg", "load")
CPU_FIELDS = ("cpu_count", "cpus", "num_cpus")


def load_per_core(record: dict[str, Any]) -> float:
    """The CPU load during the cell's latency measurement per core, NaN where the record does not carry it.

    Read from ``latency.load_average`` / ``latency.cpu_count`` (else the same names under ``latency_protocol``,
    ``latency_ms``, ``env`` or the record itself); of several numbers (1/5/15-minute averages, before and after)
    the highest load counts."""
    places = [record.get(k) for k in ("latency", "latency_protocol", "latency_ms", "env")] + [record]
    places = [p for p in places if isinstance(p, dict)]
    loads = next((_numbers(p[f]) for p in places for f in LOAD_FIELDS if f in p and _numbers(p[f])), [])
    cpus = next((_numbers(p[f]) for p in places for f in CPU_FIELDS if f in p and _numbers(p[f])), [])
    if not loads or not cpus or max(cpus) <= 0:
        return math.nan
    return max(loads) / max(cpus)


def latency_flag(median: float, p90: float, load: float) -> str:
    """Why a latency is unreliable ("" when nothing says so): a p90 / median ratio above :data:`P90_RATIO_LIMIT`,
    or a load above :data:`LOAD_PER_CORE_LIMIT` per core while it was measured."""
    reasons = []
    if not math.isnan(median) and not math.isnan(p90) and median > 0 and p90 / median > P90_RATIO_LIMIT:
        reasons.append(f"p90/median {p90 / median:.1f}")
    if not math.isnan(load) and load > LOAD_PER_CORE_LIMIT:
        reasons.append(f"load {load:.1f}/core")
    return "; ".join(reasons)


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
