"""A cell's numbers from lmms-eval's results: task scores, per-sample rows, RelAcc and agreement against the
unpruned baseline, harness overhead, the cell's status from its tasks, and the one-line summary printed per cell."""

from __future__ import annotations

from typing import Any

__all__ = ["assemble", "overhead", "relacc_and_agreement", "sample_rows", "summary", "task_scores"]


def task_scores(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{task: {metric, score, n, metrics}}`` for each leaf task lmms-eval reported (groups are expanded).

    ``metric``/``score``: the task's first metric (its primary one, what tables show); ``metrics``: every
    metric lmms-eval reported, keyed ``name`` for the unfiltered value and ``name,filter`` otherwise."""
    out = {}
    n_samples = results.get("n-samples", {})
    for task, metrics in results.get("results", {}).items():
        if task in results.get("group_subtasks", {}) and results["group_subtasks"][task]:
            continue  # a group: its leaves are reported
        values = {}
        for name, value in metrics.items():
            if name == "alias" or "stderr" in name or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            metric, _, filt = name.partition(",")
            values[metric if filt in ("", "none") else name] = float(value)
        if not values:
            continue
        primary = next(iter(values))
        out[task] = {"metric": primary.split(",")[0], "score": values[primary], "n": (n_samples.get(task) or {}).get("effective"), "metrics": values}
    return out


def sample_rows(results: dict[str, Any], scores: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per evaluated document: task, doc id, target, raw and filtered answer, its score on the primary metric."""
    rows = []
    for task, samples in (results.get("samples") or {}).items():
        metric = scores.get(task, {}).get("metric")
        for s in samples:
            resp = s.get("resps") or [[""]]
            raw = resp[0][0] if isinstance(resp[0], list) else resp[0]
            filtered = s.get("filtered_resps") or [raw]
            rows.append(
                {
                    "task": task,
                    "doc_id": s.get("doc_id"),
                    "target": s.get("target"),
                    "answer": raw,
                    "filtered": filtered[0],
                    "score": s.get(metric) if metric else None,
                }
            )
    return rows


def relacc_and_agreement(
    tasks: dict[str, dict[str, Any]], rows: list[dict[str, Any]], baseline: dict[str, Any] | None, baseline_rows: list[dict[str, Any]]
) -> tuple[float | None, float | None]:
    """RelAcc (mean over tasks of score / baseline score) and agreement (share of answers equal to the baseline's);
    sets each task's ``baseline`` score."""
    if baseline is None:
        return None, None
    ratios = []
    for task, entry in tasks.items():
        base = (baseline.get("tasks") or {}).get(task, {}).get("score")
        entry["baseline"] = base
        if base:
            ratios.append(entry["score"] / base)
    relacc = sum(ratios) / len(ratios) if ratios else None
    ref = {(r["task"], r["doc_id"]): r["answer"] for r in baseline_rows}
    same = [r["answer"] == ref[(r["task"], r["doc_id"])] for r in rows if (r["task"], r["doc_id"]) in ref]
    return relacc, (sum(same) / len(same) if same else None)


def overhead(timings: list[dict[str, float]], batch_size: int) -> dict[str, Any]:
    """Per-sample data loading, preprocessing, generation and harness time of the evaluation (ms)."""
    t = {k: sum(float(x.get(k, 0) or 0) for x in timings) for k in ("requests", "wall_s", "visual_s", "prepare_s", "generate_s")}
    n = max(int(t["requests"]), 1)
    harness = t["wall_s"] - t["visual_s"] - t["prepare_s"] - t["generate_s"]
    return {
        "per_sample_data_ms": t["visual_s"] / n * 1e3,
        "per_sample_preprocess_ms": t["prepare_s"] / n * 1e3,
        "per_sample_generate_ms": t["generate_s"] / n * 1e3,
        "per_sample_harness_ms": harness / n * 1e3,
        "batch_size": batch_size,
        "requests": int(t["requests"]),
    }


def assemble(
    record: dict[str, Any], units: dict[str, dict[str, Any]], is_baseline: bool, baseline: tuple[dict[str, Any] | None, list[dict[str, Any]]], batch_size: int
) -> list[dict[str, Any]]:
    """Complete a cell's ``record`` from its task parts (status, scores, RelAcc, agreement, tokens, overhead); returns its rows.

    ``baseline``: the baseline's (record, rows), or (None, []) when there is none yet."""
    tasks: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    finals: list[float] = []
    averages: list[float] = []
    errors = {u: {k: e.get(k) for k in ("status", "error", "traceback")} for u, e in units.items() if e["status"] != "done"}
    for entry in units.values():
        if entry["status"] == "done":
            tasks.update(entry["scores"])
            rows += entry["rows"]
            finals += entry["tokens"]["final"]
            averages += entry["tokens"]["layer_average"]
    record["tokens"].update(final=_mean(finals), layer_average=_mean(averages))
    if is_baseline:
        for entry in tasks.values():
            entry["baseline"] = entry["score"]
        relacc, agreement = (1.0, 1.0) if tasks else (None, None)
    else:
        relacc, agreement = relacc_and_agreement(tasks, rows, *baseline)
    record.update(tasks=tasks, relacc=relacc, agreement=agreement, overhead_ms=overhead([e.get("timing") or {} for e in units.values()], batch_size))
    if sorted(tasks) != record["task_names"] and not errors:  # groups (e.g. `shapes`) are reported by their leaf tasks
        record["requested_tasks"], record["task_names"] = record["task_names"], sorted(tasks)
    failed = {u: e for u, e in errors.items() if e["status"] == "failed"}
    if failed:
        record["task_errors"] = errors
        record["traceback"] = "\n".join(f"--- task {u} ---\n{e.get('traceback') or e.get('error')}" for u, e in failed.items())
        record.update(status="failed", error=f"{len(failed)} of {len(units)} task(s) failed: " + "; ".join(f"{u}: {e['error']}" for u, e in failed.items()))
    elif errors:
        record["task_errors"] = errors
        record.update(status="infeasible", error="; ".join(f"{u}: {e['error']}" for u, e in errors.items()))
    else:
        record["status"] = "done"
    return rows


def summary(record: dict[str, Any]) -> str:
    """The line printed after each cell."""
    status = record.get("status")
    if status == "infeasible":
        return f"infeasible ({record.get('error')})"
    if status == "failed":
        return f"FAILED ({record.get('error')}); traceback in {record.get('key')}.json"
    relacc = record.get("relacc")
    latency = record.get("latency_ms") or {}
    ttft = (latency.get("ttft") or latency.get("prefill") or {}).get("median")
    # the leaderboard's units: RelAcc and agreement in %, FLOPs in G or T
    parts = [f"RelAcc {relacc * 100:.1f} %" if relacc is not None else "RelAcc -"]
    if record.get("agreement") is not None:
        parts.append(f"agreement {record['agreement'] * 100:.1f} %")
    if ttft is not None:
        parts.append(f"TTFT {ttft:.1f} ms")
    tflops = (record.get("flops") or {}).get("measured_tflops")
    if tflops is not None:
        parts.append(f"{tflops:.2f} TFLOPs" if tflops >= 1 else f"{tflops * 1e3:.3f} GFLOPs")
    parts += [f"WARNING {w}" for w in record.get("warnings") or []]
    return ", ".join(parts)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
