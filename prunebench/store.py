"""Crash-safe results store: one JSON record per finished cell, written atomically.

Layout of a run folder::

    RUN/config.yaml          resolved sweep config (omegaconf; `prunebench run --config RUN/config.yaml` replays it)
    RUN/suite.json           the suite it ran (tasks, include paths, generation kwargs)
    RUN/cells/<key>.json     one record per cell (status done | failed | infeasible)
    RUN/samples/<key>.jsonl  per-sample answers of that cell
    RUN/partial/<key>/       a cell in progress: costs.json (latency probe, FLOPs, KV) and one <task>.json per
                             evaluated task (scores, per-sample rows, or the task's traceback); removed once the
                             cell's record is done

A record is written to a temporary file in the same folder, fsynced and renamed over its final name, so a
reader (or a rerun after SIGKILL) sees either the whole record or none of it. The cell key is a hash of
everything that changes the result (:func:`cell_key`); a rerun skips keys already done, and inside an
unfinished cell it skips the tasks already evaluated (a kill loses at most the task in flight).

Record fields (all JSON; readers must tolerate extra fields)::

    key, status, model, suite, task_names, method, method_params, budget, budget_mode, budget_scope,
    limit, seed, preprocess,
    tasks: {task: {metric, score, baseline, n, metrics}}, relacc, agreement,
    tokens: {final, layer_average, per_layer, planned_per_layer},
    latency_ms: {ttft|prefill|decode_per_token|total|vision|select|...: {median, p90, n}},
    flops: {measured_tflops, analytic_tflops, vision_tflops},
    kv_cache: {measured_mb, analytic_mb}, peak_memory_mb,
    env: {attn_implementation, device, dtype, versions, git},
    error, started, finished

``tasks[t].score`` is the task's primary (first) metric, ``tasks[t].metrics`` all of lmms-eval's metrics.
``latency_ms.ttft`` is the time to first token; see :data:`prunebench.runner.sweep.LATENCY_PARTS` for the
other entries and how they partition it. ``analytic_tflops`` and ``vision_tflops`` are None for families
without an analytic vision formula (only ``vision_measured_tflops`` then).

Fields the runner adds (readers may rely on them when present)::

    requested_tasks, reused_from, traceback, task_errors, warnings, contract_ok, latency_protocol,
    latency_parts, overhead_ms, env_adapter, peak_memory_kind, peak_memory_growth_mb, batch_size,
    flops_counted_on, flops.{llm_measured,llm_analytic,vision_measured,select_llm}_tflops, flops.llm_rel_diff,
    flops.llm_agree, tokens.{kv_per_layer, text}, layout, weights, code, versions, task_files

The unpruned baseline is an ordinary cell with ``method == "none"`` and ``budget is None``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

BASELINE_METHOD = "none"
STATUSES = ("done", "failed", "infeasible")
STALE_TMP_S = 600  # a temporary file lives for milliseconds; one this old is the leftover of a killed writer


def cell_key(fields: dict[str, Any]) -> str:
    """Stable 16-hex-digit hash of the fields that determine a cell's result."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with _suppress():
            os.unlink(tmp)
        raise


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return True


class ResultStore:
    """A run folder."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.cells_dir = self.root / "cells"
        self.samples_dir = self.root / "samples"

    def exists(self) -> bool:
        return self.cells_dir.is_dir()

    def path(self, key: str) -> Path:
        return self.cells_dir / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self.path(key)
        if not path.exists():
            return None
        return json.loads(path.read_text())

    def is_done(self, key: str) -> bool:
        record = self.get(key)
        return record is not None and record.get("status") in ("done", "infeasible")

    def put(self, record: dict[str, Any], samples: Iterable[dict[str, Any]] | None = None) -> None:
        """Write a cell (its per-sample log first, so a done record always has its samples)."""
        if record.get("status") not in STATUSES:
            raise ValueError(f"record status must be one of {STATUSES}, got {record.get('status')!r}")
        key = record["key"]
        if samples is not None:
            lines = "".join(json.dumps(s, default=str) + "\n" for s in samples)
            atomic_write_text(self.samples_dir / f"{key}.jsonl", lines)
        atomic_write_text(self.path(key), json.dumps(record, indent=1, default=str))

    def records(self) -> Iterator[dict[str, Any]]:
        if not self.cells_dir.is_dir():
            return
        for path in sorted(self.cells_dir.glob("*.json")):
            try:
                yield json.loads(path.read_text())
            except json.JSONDecodeError:  # impossible with atomic writes, unless edited by hand
                continue

    # -- a cell in progress -------------------------------------------------------------------------------------
    def partial_path(self, key: str, part: str) -> Path:
        """``RUN/partial/<key>/<part>.json``; ``part`` is ``costs`` or a task name."""
        return self.root / "partial" / key / (re.sub(r"[^\w.\-]", "_", part) + ".json")

    def get_partial(self, key: str, part: str) -> dict[str, Any] | None:
        path = self.partial_path(key, part)
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:  # only a hand edit can do this; recompute the part
            return None

    def put_partial(self, key: str, part: str, data: dict[str, Any]) -> None:
        atomic_write_text(self.partial_path(key, part), json.dumps(data, default=str))

    def clear_partial(self, key: str) -> None:
        shutil.rmtree(self.root / "partial" / key, ignore_errors=True)

    def clean_stale_tmp(self, older_than_s: float = STALE_TMP_S) -> list[Path]:
        """Remove temporary files a killed writer left behind (never a fresh one: another run may be writing it)."""
        removed = []
        now = time.time()
        if not self.root.is_dir():
            return removed
        for path in self.root.rglob(".*.tmp"):
            try:
                if now - path.stat().st_mtime > older_than_s:
                    path.unlink()
                    removed.append(path)
            except OSError:
                continue
        return removed

    def samples(self, key: str) -> list[dict[str, Any]]:
        path = self.samples_dir / f"{key}.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def write_config(self, text: str, suite: dict[str, Any] | None = None) -> None:
        atomic_write_text(self.root / "config.yaml", text)
        if suite is not None:
            atomic_write_text(self.root / "suite.json", json.dumps(suite, indent=1))
