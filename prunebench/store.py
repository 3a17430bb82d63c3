"""Crash-safe results store: one JSON record per finished cell, written atomically.

Layout of a run folder::

    RUN/config.yaml          resolved sweep config (omegaconf)
    RUN/cells/<key>.json     one record per cell (status done | failed | infeasible)
    RUN/samples/<key>.jsonl  per-sample answers of that cell

A record is written to a temporary file in the same folder, fsynced and renamed over its final name, so a
reader (or a rerun after SIGKILL) sees either the whole record or none of it. The cell key is a hash of
everything that changes the result (:func:`cell_key`); a rerun skips keys already done.

Record fields (all JSON; readers must tolerate extra fields)::

    key, status, model, suite, task_names, method, method_params, budget, budget_mode, budget_scope,
    limit, seed, preprocess,
    tasks: {task: {metric, score, baseline, n}}, relacc, agreement,
    tokens: {final, layer_average, per_layer, planned_per_layer},
    latency_ms: {prefill|decode_per_token|total|vision|select: {median, p90}},
    flops: {measured_tflops, analytic_tflops, vision_tflops},
    kv_cache: {measured_mb, analytic_mb}, peak_memory_mb,
    env: {attn_implementation, device, dtype, versions, git},
    error, started, finished

Fields the runner adds (readers may rely on them when present)::

    requested_tasks, reused_from, traceback, latency_protocol, overhead_ms, env_adapter, peak_memory_kind,
    flops_counted_on, flops.{llm_measured,llm_analytic,vision_measured}_tflops, flops.llm_rel_diff,
    tokens.{kv_per_layer, text}

The unpruned baseline is an ordinary cell with ``method == "none"`` and ``budget is None``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

BASELINE_METHOD = "none"
STATUSES = ("done", "failed", "infeasible")


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

    def samples(self, key: str) -> list[dict[str, Any]]:
        path = self.samples_dir / f"{key}.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def write_config(self, text: str) -> None:
        atomic_write_text(self.root / "config.yaml", text)
