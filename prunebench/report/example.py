"""A small synthetic run folder (records, per-sample logs and plan.json as the runner writes them), for tests and
for trying the report, plot and compare commands without running a sweep::

    python -m prunebench.report.example /tmp/example_run && prunebench report /tmp/example_run

The numbers are invented for illustration; nothing here is a measurement.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from prunebench.store import ResultStore, cell_key

TASKS = ("shapes_count", "shapes_color")
BASELINE_SCORES = {"shapes_count": 0.80, "shapes_color": 0.60}

# method, budget, status, (count score, color score), agreement, prefill ms, measured TFLOPs, KV MB
CELLS = [
    ("none", None, "done", (0.80, 0.60), 1.0, 10.0, 2.00, 8.0),
    ("fastv", 32, "done", (0.72, 0.54), 0.85, 7.0, 1.20, 5.0),
    ("fastv", 16, "done", (0.64, 0.48), 0.70, 6.5, 0.90, 4.5),
    ("fastv", 8, "infeasible", None, None, None, None, None),
    ("visionzip", 32, "done", (0.76, 0.57), 0.90, 6.0, 0.80, 2.0),
    ("visionzip", 16, "done", (0.68, 0.54), 0.80, 5.5, 0.60, 1.5),
    ("visionzip", 8, "failed", None, None, None, None, None),
    ("random", 32, "done", (0.60, 0.45), 0.60, 5.9, None, 2.0),  # no measured FLOPs: analytic fallback
    ("random", 16, "done", (0.40, 0.42), 0.50, 5.4, None, 1.5),
    ("my_plugin", 32, "done", (0.78, 0.51), 0.88, 8.0, 1.00, 2.2),  # not registered here: no citation
]


def example_records(model: str = "tiny-llava", suite: str = "shapes", scale: float = 1.0) -> list[dict]:
    """Records of the cells above; ``scale`` multiplies the pruned scores (to make a second, different run)."""
    records = []
    for method, budget, status, scores, agreement, prefill, tflops, kv in CELLS:
        fields = {"model": model, "suite": suite, "method": method, "budget": budget, "scale": scale}
        record = {
            "key": cell_key(fields),
            "status": status,
            "model": model,
            "suite": suite,
            "task_names": list(TASKS),
            "method": method,
            "method_params": {},
            "budget": budget,
            "budget_mode": "average",
            "budget_scope": "image",
            "limit": 20,
            "seed": 0,
            "preprocess": "stock",
            "tasks": {},
            "relacc": None,
            "agreement": None,
            "tokens": {},
            "latency_ms": {},
            "flops": {},
            "kv_cache": {},
            "peak_memory_mb": None,
            "env": {"attn_implementation": "sdpa", "device": "cpu", "dtype": "float32"},
            "error": None,
            "started": "2026-01-01T00:00:00",
            "finished": "2026-01-01T00:01:00",
        }
        if status == "done":
            factor = 1.0 if method == "none" else scale
            task_scores = {t: s * factor for t, s in zip(TASKS, scores)}
            record["tasks"] = {t: {"metric": "exact_match", "score": task_scores[t], "baseline": BASELINE_SCORES[t], "n": 20} for t in TASKS}
            record["relacc"] = sum(task_scores[t] / BASELINE_SCORES[t] for t in TASKS) / len(TASKS)
            record["agreement"] = agreement
            record["tokens"] = {"final": budget or 64, "layer_average": float(budget or 64)}
            record["latency_ms"] = {"prefill": {"median": prefill, "p90": prefill * 1.1}}
            record["flops"] = {"measured_tflops": tflops, "analytic_tflops": 0.5 + (budget or 64) / 64}
            record["kv_cache"] = {"measured_mb": kv, "analytic_mb": kv}
        elif status == "failed":
            record["error"] = "RuntimeError: CUDA out of memory\nTraceback ..."
        else:
            record["error"] = "budget 8 unreachable: FastV at K=2 of 6 layers averages at least 21 tokens"
        records.append(record)
    return records


def example_samples(record: dict) -> list[dict]:
    """Per-sample rows of a done record (as the runner logs them): n answers per task, the share right = the score."""
    rows = []
    for task, entry in (record.get("tasks") or {}).items():
        n = int(entry.get("n") or 20)
        right = round(float(entry["score"]) * n)
        for i in range(n):
            target = f"{task}-{i}"
            rows.append(
                {
                    "task": task,
                    "doc_id": i,
                    "target": target,
                    "answer": target if i < right else "wrong",
                    "filtered": target if i < right else "wrong",
                    "score": 1.0 if i < right else 0.0,
                }
            )
    return rows


def write_example_store(root: str | Path, plan: bool = True, **kwargs) -> ResultStore:
    """A run folder like one ``prunebench run`` leaves: ``cells/``, ``samples/`` (per-sample logs of done cells) and
    ``plan.json`` (``plan=False``: none, as a store written by hand)."""
    store = ResultStore(root)
    records = example_records(**kwargs)
    for record in records:
        store.put(record, example_samples(record) if record["status"] == "done" else None)
    if plan:
        cells = [
            {
                "key": r["key"],
                "label": "none (unpruned)" if r["method"] == "none" else f"{r['method']}@{r['budget']}",
                "method": r["method"],
                "budget": r["budget"],
            }
            for r in records
        ]
        (Path(root) / "plan.json").write_text(json.dumps(cells, indent=1))
    return store


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "example_run"
    write_example_store(target)
    print(f"wrote a synthetic results store to {target}")
