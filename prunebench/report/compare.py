"""Two runs side by side: which cells differ, in what (``prunebench compare RUN_A RUN_B``).

Cells are matched on what defines them, not on their keys (a key also covers the code and library versions, so
the same cell run by another version has another key): model, method and its parameters, budget, budget mode and
scope, suite, limit, seed, preprocessing and layout. For every matched cell the comparison reports

- accuracy: the status, each task's score, RelAcc and agreement (equal within ``score_tolerance``, absolute;
  default 0: a benchmark that changes one answer changes its score);
- tokens (final and layer average), FLOPs and KV bytes (equal within ``cost_tolerance``, relative);
- latency, the median time to first token (else LLM prefill time), equal within ``latency_tolerance``, relative
  (default 0.5: timings move with the machine's load);

and lists the cells found in only one of the runs. :func:`compare_runs` returns a :class:`Comparison`; its
``equal_accuracy`` is what the command's exit code says (0: every cell in both runs, all with equal accuracy; 1:
otherwise). Cost and latency differences are reported but do not change the exit code.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from prunebench.report.leaderboard import _row, display_name, load_records
from prunebench.store import BASELINE_METHOD

IDENTITY = ("model", "method", "method_params", "budget", "budget_mode", "budget_scope", "suite", "limit", "seed", "preprocess", "layout")
COSTS = (("tokens_final", "tokens (final)"), ("tokens_layer_average", "tokens (layer avg)"), ("tflops", "TFLOPs"), ("kv_mb", "KV MB"))


def cell_identity(record: dict[str, Any]) -> tuple:
    """What makes two records of different runs the same cell (the fields of :data:`IDENTITY`)."""
    out = []
    for name in IDENTITY:
        value = record.get(name)
        if name in ("budget_mode", "budget_scope") and record.get("method", BASELINE_METHOD) == BASELINE_METHOD:
            value = None  # the unpruned cell has no budget
        out.append(json.dumps(value, sort_keys=True, default=str))
    return tuple(out)


def cell_name(record: dict[str, Any]) -> str:
    """'FastV@64 (average, image) [toy-llava, shapes]': the cell as a reader names it."""
    method = str(record.get("method") or BASELINE_METHOD)
    if method == BASELINE_METHOD:
        head = "Unpruned"
    else:
        where = ", ".join(str(record[k]) for k in ("budget_mode", "budget_scope") if record.get(k))
        head = f"{display_name(method)}@{record.get('budget')}" + (f" ({where})" if where else "")
    params = record.get("method_params") or {}
    if params and method != BASELINE_METHOD:
        head += " {" + ", ".join(f"{k}={v}" for k, v in sorted(params.items())) + "}"
    protocol = [str(record.get("model") or ""), str(record.get("suite") or "")]
    protocol += [f"{k}={record[k]}" for k in ("limit", "seed") if record.get(k) is not None]
    return head + " [" + ", ".join(p for p in protocol if p) + "]"


@dataclass
class CellDiff:
    name: str
    accuracy: list[str] = field(default_factory=list)  # what differs in accuracy (status, a task, RelAcc, agreement)
    costs: list[str] = field(default_factory=list)  # tokens, FLOPs, KV beyond the tolerance
    latency: list[str] = field(default_factory=list)  # beyond the latency tolerance

    @property
    def differs(self) -> bool:
        return bool(self.accuracy or self.costs or self.latency)


@dataclass
class Comparison:
    run_a: str
    run_b: str
    cells: list[CellDiff]
    only_a: list[str]
    only_b: list[str]
    latency_tolerance: float

    @property
    def equal_accuracy(self) -> bool:
        """Every cell in both runs and none differs in accuracy (the exit code: 0 when True)."""
        return not self.only_a and not self.only_b and not any(c.accuracy for c in self.cells)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_a": self.run_a,
            "run_b": self.run_b,
            "equal_accuracy": self.equal_accuracy,
            "latency_tolerance": self.latency_tolerance,
            "only_a": self.only_a,
            "only_b": self.only_b,
            "cells": [{"cell": c.name, "accuracy": c.accuracy, "costs": c.costs, "latency": c.latency} for c in self.cells],
        }

    def to_text(self) -> str:
        differing = [c for c in self.cells if c.differs]
        lines = [f"A = {self.run_a}", f"B = {self.run_b}", ""]
        for cell in differing:
            lines.append(cell.name)
            lines += [f"  accuracy: {d}" for d in cell.accuracy]
            lines += [f"  cost:     {d}" for d in cell.costs]
            lines += [f"  latency:  {d}" for d in cell.latency]
        lines += [f"only in A: {name}" for name in self.only_a]
        lines += [f"only in B: {name}" for name in self.only_b]
        n_acc = sum(1 for c in self.cells if c.accuracy)
        n_cost = sum(1 for c in self.cells if c.costs)
        n_lat = sum(1 for c in self.cells if c.latency)
        if differing or self.only_a or self.only_b:
            lines.append("")
        lines.append(
            f"{len(self.cells)} cell(s) in both runs: {len(self.cells) - n_acc} equal in accuracy, {n_acc} differ; "
            f"{n_cost} differ in tokens/FLOPs/KV; {n_lat} differ in latency by more than {self.latency_tolerance:.0%}; "
            f"{len(self.only_a)} only in A, {len(self.only_b)} only in B"
        )
        lines.append("equal in accuracy" if self.equal_accuracy else "NOT equal in accuracy")
        return "\n".join(lines) + "\n"


def _fmt(value: float, digits: int = 3) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _nan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _records(run: Any, all_cells: bool) -> dict[tuple, dict[str, Any]]:
    out = {}
    for _, record in load_records(run, all_cells=all_cells):
        if record.get("status") == "missing":
            continue  # planned but without a valid record: counted as not in the run
        out[cell_identity(record)] = record
    return out


def compare_records(
    a: dict[str, Any], b: dict[str, Any], score_tolerance: float = 0.0, latency_tolerance: float = 0.5, cost_tolerance: float = 1e-6
) -> CellDiff:
    """What differs between two records of one cell."""
    diff = CellDiff(cell_name(a))
    status_a, status_b = a.get("status") or "done", b.get("status") or "done"
    if status_a != status_b:
        diff.accuracy.append(f"status {status_a} -> {status_b}")
        return diff
    if status_a != "done":
        return diff
    row_a, row_b = _row("A", a), _row("B", b)
    tasks = list(dict.fromkeys([*row_a["_scores"], *row_b["_scores"]]))
    for task in tasks:
        x, y = row_a["_scores"].get(task, math.nan), row_b["_scores"].get(task, math.nan)
        if _nan(x) and _nan(y):
            continue
        if _nan(x) or _nan(y) or abs(x - y) > score_tolerance:
            delta = f" ({y - x:+.3f})" if not (_nan(x) or _nan(y)) else ""
            diff.accuracy.append(f"{task} {_fmt(x)} -> {_fmt(y)}{delta}")
    for col, title in (("relacc", "RelAcc %"), ("agreement", "agreement %")):
        x, y = row_a[col], row_b[col]
        if _nan(x) and _nan(y):
            continue
        if _nan(x) or _nan(y) or abs(x - y) > 100.0 * score_tolerance + 1e-9:
            diff.accuracy.append(f"{title} {_fmt(x, 1)} -> {_fmt(y, 1)}")
    for col, title in COSTS:
        x, y = row_a[col], row_b[col]
        if _nan(x) and _nan(y):
            continue
        if _nan(x) or _nan(y) or abs(x - y) > cost_tolerance * max(abs(x), abs(y), 1e-12):
            diff.costs.append(f"{title} {x:.6g} -> {y:.6g}" if not (_nan(x) or _nan(y)) else f"{title} {x} -> {y}")
    x, y = row_a["prefill_ms"], row_b["prefill_ms"]
    if not (_nan(x) or _nan(y)) and x > 0:
        ratio = y / x
        if abs(ratio - 1.0) > latency_tolerance:
            what = "TTFT" if row_a["latency_source"] == "ttft" else "prefill"
            diff.latency.append(f"{what} {x:.1f} -> {y:.1f} ms (x{ratio:.2f}, beyond ±{latency_tolerance:.0%})")
    return diff


def _order(record: dict[str, Any]) -> tuple:
    """Leaderboard order: the unpruned cell, then budgets from the largest, methods by name."""
    budget = record.get("budget")
    return (
        record.get("method") != BASELINE_METHOD,
        str(record.get("model")),
        str(record.get("budget_mode")),
        -(budget if isinstance(budget, int) else 10**9),
        str(record.get("method")),
        cell_name(record),
    )


def compare_runs(
    run_a: Any, run_b: Any, score_tolerance: float = 0.0, latency_tolerance: float = 0.5, cost_tolerance: float = 1e-6, all_cells: bool = False
) -> Comparison:
    """Match the cells of two run folders (or stores, or record lists) and compare each pair
    (:func:`compare_records`)."""
    a, b = _records(run_a, all_cells), _records(run_b, all_cells)
    a, b = dict(sorted(a.items(), key=lambda kv: _order(kv[1]))), dict(sorted(b.items(), key=lambda kv: _order(kv[1])))
    cells = [compare_records(a[k], b[k], score_tolerance, latency_tolerance, cost_tolerance) for k in a if k in b]
    only_a = [cell_name(a[k]) for k in a if k not in b]
    only_b = [cell_name(b[k]) for k in b if k not in a]
    return Comparison(str(run_a), str(run_b), cells, only_a, only_b, latency_tolerance)


__all__ = ["CellDiff", "Comparison", "cell_identity", "compare_records", "compare_runs"]
