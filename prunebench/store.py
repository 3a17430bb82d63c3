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

Every file is validated before it is trusted (:func:`cell_problem`, :func:`sample_problem`, :func:`plan_problem`,
:func:`partial_problem`): truncated or invalid JSON, bytes that are not UTF-8, a wrong type, a status without the
fields it requires (``{"status": "done"}`` alone is not a record) or per-sample log that does not match the
``samples_sha256`` its record states. A damaged file is never trusted and never deleted: a store in repair mode
(the run holding the folder's lock, :meth:`ResultStore.lock`) moves it to ``RUN/damaged/<time>-<path>`` and
appends ``{file, moved_to, reason, key, time}`` to ``RUN/damaged/index.jsonl`` (:meth:`ResultStore.damaged`),
logging one line that names the file and what is wrong; a read-only reader (status, report) only reports it.
The cell then counts as missing, so the next run recomputes it and nothing else.

One writer per run folder: :meth:`ResultStore.lock` takes ``RUN/.lock`` (the ``filelock`` library; released by
the OS when the process dies) and writes who holds it to ``RUN/.lock.json`` (pid, host, start time, command). A
second run fails at once naming the holder, or waits (``prunebench run --wait``). Once the lock is held every
``.tmp`` file in the run folder is a killed writer's leftover and is removed at once. Files and folders follow
the user's umask.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from prunebench.records import (
    BASELINE_METHOD,
    STATUSES,
    _now,
    _samples_text,
    _sha256,
    atomic_write_text,
    cell_key,
    cell_problem,
    parse_json,
    partial_problem,
    plan_problem,
    read_json,
    sample_problem,
    samples_problem,
)
from prunebench.runlock import LOCK_INFO_NAME, LOCK_NAME, RunLock, RunLocked, os_error_fix

__all__ = [
    "BASELINE_METHOD",
    "DAMAGED_DIR",
    "LOCK_INFO_NAME",
    "LOCK_NAME",
    "STALE_TMP_S",
    "STATUSES",
    "ResultStore",
    "RunLock",
    "RunLocked",
    "atomic_write_text",
    "cell_key",
    "cell_problem",
    "os_error_fix",
    "parse_json",
    "partial_problem",
    "plan_problem",
    "read_json",
    "sample_problem",
    "samples_problem",
]

log = logging.getLogger("prunebench.store")

STALE_TMP_S = 600  # without the lock a temporary file may be another writer's; one this old is a killed writer's leftover
DAMAGED_DIR = "damaged"


# -- the store -------------------------------------------------------------------------------------------------------
class ResultStore:
    """A run folder (or the shared baseline cache).

    ``repair``: move damaged files aside (set while this process holds the folder's lock, or for the shared
    baseline cache by the run that uses it); otherwise damage is only reported, the files stay where they are.
    ``on_damage(message)`` receives each one-line report (default: a warning in the log).
    """

    def __init__(self, root: str | os.PathLike, repair: bool = False, on_damage: Callable[[str], None] | None = None):
        self.root = Path(root)
        self.cells_dir = self.root / "cells"
        self.samples_dir = self.root / "samples"
        self.repair = repair
        self.on_damage = on_damage
        self._reported: dict[Path, str] = {}  # damage seen by this process (reported once)

    def exists(self) -> bool:
        return self.cells_dir.is_dir()

    def path(self, key: str) -> Path:
        return self.cells_dir / f"{key}.json"

    def samples_path(self, key: str) -> Path:
        return self.samples_dir / f"{key}.jsonl"

    # -- validated reading -----------------------------------------------------------------------------------------
    def inspect(self, key: str) -> tuple[dict[str, Any] | None, str | None, list[Path]]:
        """``(record, None, [])`` for a valid record, ``(None, None, [])`` for none, ``(None, reason, files)`` for
        a damaged one (``files``: what must be set aside). Reads only; moves nothing."""
        path = self.path(key)
        record, problem = read_json(path)
        if problem == "missing":
            return None, None, []
        problem = problem or cell_problem(record, key)
        if problem:
            return None, problem, [path]
        samples = self.samples_path(key)
        if "samples_sha256" in record or samples.exists():
            try:
                raw = samples.read_bytes()
            except FileNotFoundError:
                return None, f"its per-sample log {self._rel(samples)} is missing", [path]
            problem = None
            if "samples_sha256" in record and _sha256(raw) != record["samples_sha256"]:
                problem = "does not match the samples_sha256 of its record (truncated or edited)"
            else:
                try:
                    problem = samples_problem(raw.decode("utf-8"))
                except UnicodeDecodeError as exc:
                    problem = f"not UTF-8 text (binary garbage at byte {exc.start})"
            if problem:
                return None, f"its per-sample log {self._rel(samples)}: {problem}", [samples, path]
        return record, None, []

    def get(self, key: str) -> dict[str, Any] | None:
        """The cell's validated record, or None (none yet, or damaged: reported, and set aside in repair mode)."""
        record, problem, files = self.inspect(key)
        if problem:
            self._damaged(files, problem, key)
            return None
        return record

    def state(self, key: str) -> tuple[str, str | None]:
        """``(status, detail)``: done / failed / infeasible (detail: the error), ``damaged`` (detail: what is
        wrong; the file is in place, or was set aside and not recomputed since) or ``missing``."""
        record, problem, _files = self.inspect(key)
        if problem:
            return "damaged", f"{self._rel(self.path(key))}: {problem}"
        if record is not None:
            return record["status"], record.get("error")
        for entry in reversed(self.damaged()):
            if entry.get("key") == key:
                return "damaged", f"{entry.get('file')}: {entry.get('reason')} (set aside as {entry.get('moved_to')})"
        return "missing", None

    def is_done(self, key: str) -> bool:
        record = self.get(key)
        return record is not None and record.get("status") in ("done", "infeasible")

    def missing_or_damaged(self, plan: Iterable[Any] | None = None) -> list[dict[str, Any]]:
        """The planned cells without a valid record: ``[{key, label, state: missing | damaged, reason}]``.
        ``plan``: cells (dicts with key and label) or keys; default: the folder's plan.json (none: [])."""
        if plan is None:
            plan = self.plan() or []
        out = []
        for cell in plan:
            key = cell["key"] if isinstance(cell, dict) else str(cell)
            state, detail = self.state(key)
            if state in ("missing", "damaged"):
                out.append({"key": key, "label": cell.get("label", key) if isinstance(cell, dict) else key, "state": state, "reason": detail})
        return out

    def report_missing(self, plan: Iterable[Any] | None = None) -> list[dict[str, Any]]:
        """:meth:`missing_or_damaged`, each also logged as one warning line (what a report shows instead of silently
        leaving the row out)."""
        gaps = self.missing_or_damaged(plan)
        for gap in gaps:
            detail = f": {gap['reason']}" if gap["reason"] else ""
            log.warning(
                "%s: cell %s (%s) is %s%s; `prunebench run` with the same settings computes it", self.root, gap["label"], gap["key"], gap["state"], detail
            )
        return gaps

    def plan(self) -> list[dict[str, Any]] | None:
        """plan.json validated: the cells, None when there is none; a damaged one is reported (set aside in
        repair mode) and read as None."""
        path = self.root / "plan.json"
        plan, problem = read_json(path)
        if problem == "missing":
            return None
        problem = problem or plan_problem(plan)
        if problem:
            self._damaged([path], problem, None)
            return None
        return plan

    def records(self) -> Iterator[dict[str, Any]]:
        """Every valid record; a damaged one is reported (and set aside in repair mode), never yielded."""
        if not self.cells_dir.is_dir():
            return
        for path in sorted(self.cells_dir.glob("*.json")):
            record = self.get(path.stem)
            if record is not None:
                yield record

    def samples(self, key: str) -> list[dict[str, Any]]:
        """The cell's per-sample rows ([] when there are none or they are damaged: :meth:`get` reports that)."""
        path = self.samples_path(key)
        try:
            text = path.read_bytes().decode("utf-8")
        except (FileNotFoundError, UnicodeDecodeError):
            return []
        if samples_problem(text):
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    # -- writing ---------------------------------------------------------------------------------------------------
    def put(self, record: dict[str, Any], samples: Iterable[dict[str, Any]] | None = None) -> None:
        """Write a cell (its per-sample log first, so a done record always has its samples; the record states
        their ``samples_sha256``). An invalid record is a ValueError, never written."""
        record = dict(record)
        record.pop("samples_sha256", None)  # it describes the log written here, never one copied from another record
        if samples is not None:
            text = _samples_text(samples)
            record["samples_sha256"] = _sha256(text)
        problem = cell_problem(json.loads(json.dumps(record, default=str)))
        if problem:
            raise ValueError(f"refusing to write an invalid cell record ({problem})")
        key = record["key"]
        if samples is not None:
            atomic_write_text(self.samples_path(key), text)
        atomic_write_text(self.path(key), json.dumps(record, indent=1, default=str))

    def write_config(self, text: str, suite: dict[str, Any] | None = None) -> None:
        atomic_write_text(self.root / "config.yaml", text)
        if suite is not None:
            atomic_write_text(self.root / "suite.json", json.dumps(suite, indent=1))

    # -- a cell in progress -------------------------------------------------------------------------------------
    def partial_path(self, key: str, part: str) -> Path:
        """``RUN/partial/<key>/<part>.json``; ``part`` is ``costs`` or a task name."""
        return self.root / "partial" / key / (re.sub(r"[^\w.\-]", "_", part) + ".json")

    def get_partial(self, key: str, part: str) -> dict[str, Any] | None:
        """A saved part, validated; a damaged one is reported (set aside in repair mode) and recomputed."""
        path = self.partial_path(key, part)
        data, problem = read_json(path)
        if problem == "missing":
            return None
        problem = problem or partial_problem("costs" if part == "costs" else "task", data)
        if problem:
            self._damaged([path], problem, key)
            return None
        return data

    def put_partial(self, key: str, part: str, data: dict[str, Any]) -> None:
        atomic_write_text(self.partial_path(key, part), json.dumps(data, default=str))

    def clear_partial(self, key: str) -> None:
        shutil.rmtree(self.root / "partial" / key, ignore_errors=True)

    def clean_stale_tmp(self, older_than_s: float = STALE_TMP_S) -> list[Path]:
        """Remove temporary files a killed writer left behind: those older than ``older_than_s`` (without the
        folder's lock a fresh one may be another run's), or all of them (``0``) once the lock is held."""
        removed = []
        now = time.time()
        if not self.root.is_dir():
            return removed
        for path in self.root.rglob(".*.tmp"):
            try:
                if older_than_s <= 0 or now - path.stat().st_mtime > older_than_s:
                    path.unlink()
                    removed.append(path)
            except OSError:
                continue
        return removed

    # -- damage --------------------------------------------------------------------------------------------------
    def _rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def _damaged(self, files: list[Path], reason: str, key: str | None) -> None:
        """Report damaged ``files[0]`` (once per process) and, in repair mode, move every one of ``files`` aside."""
        main = where = files[0]
        if not self.repair:
            if self._reported.get(main) != reason:
                self._reported[main] = reason
                self._say(f"damaged: {where}: {reason}; the next `prunebench run` sets it aside and recomputes it")
            return
        moved = []
        for path in files:
            target = self._quarantine(path)
            if target is not None:
                moved.append(target)
        if not moved:
            return  # another process moved it first
        entry = {"file": self._rel(main), "moved_to": self._rel(moved[0]), "reason": reason, "key": key, "time": _now(), "files": [self._rel(m) for m in moved]}
        index = self.root / DAMAGED_DIR / "index.jsonl"
        with open(index, "a") as handle:
            handle.write(json.dumps(entry) + "\n")
        self._say(
            f"damaged: {where}: {reason}; moved to {moved[0]}"
            + (f" (and {len(moved) - 1} more)" if len(moved) > 1 else "")
            + ("; it will be recomputed" if key else "")
        )

    def _quarantine(self, path: Path) -> Path | None:
        folder = self.root / DAMAGED_DIR
        folder.mkdir(parents=True, exist_ok=True)
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
        name = f"{stamp}-{self._rel(path).replace(os.sep, '__')}"
        target = folder / name
        n = 1
        while target.exists():
            target, n = folder / f"{name}.{n}", n + 1
        try:
            os.replace(path, target)
        except FileNotFoundError:
            return None
        return target

    def _say(self, message: str) -> None:
        if self.on_damage is not None:
            self.on_damage(message)
        else:
            log.warning("%s", message)

    def damaged(self) -> list[dict[str, Any]]:
        """What was set aside, oldest first: ``[{file, moved_to, reason, key, time, files}]`` (paths relative to the
        folder)."""
        path = self.root / DAMAGED_DIR / "index.jsonl"
        try:
            text = path.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            entry, problem = parse_json(line)
            if not problem and isinstance(entry, dict):
                out.append(entry)
        return out

    # -- one writer ------------------------------------------------------------------------------------------------
    def lock(self, wait: bool | float = False, command: str | None = None) -> RunLock:
        """The folder's writer lock (a context manager); see :class:`RunLock`."""
        return RunLock(self, wait=wait, command=command)
