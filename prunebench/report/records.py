"""Leaderboard records: loading the cells of run folders (with stand-ins for planned cells that have no valid
record), the column and name tables, and one leaderboard row per record. Moved out of
:mod:`prunebench.report.leaderboard`, which re-exports every name."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from prunebench.core import PruneBenchError
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
