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
import errno
import hashlib
import json
import logging
import os
import platform
import re
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from prunebench.core import PruneBenchError

log = logging.getLogger("prunebench.store")

BASELINE_METHOD = "none"
STATUSES = ("done", "failed", "infeasible")
STALE_TMP_S = 600  # without the lock a temporary file may be another writer's; one this old is a killed writer's leftover
LOCK_NAME, LOCK_INFO_NAME, DAMAGED_DIR = ".lock", ".lock.json", "damaged"
_HELD: dict[Path, int] = {}  # run folders this process holds the lock of (a nested lock() of the same folder is a no-op)


class RunLocked(PruneBenchError):
    """Another process holds the run folder's lock."""


def cell_key(fields: dict[str, Any]) -> str:
    """Stable 16-hex-digit hash of the fields that determine a cell's result."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, fsync it and rename it over ``path``; the file gets the
    mode a plain ``open`` would give it (0o666 less the umask; ``mkstemp`` alone makes it 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)  # folders: 0o777 less the umask
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
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


# -- validation --------------------------------------------------------------------------------------------------
def read_json(path: Path) -> tuple[Any, str | None]:
    """``(data, None)``, or ``(None, what is wrong)`` for a file that is not UTF-8 JSON."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return None, "missing"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text (binary garbage at byte {exc.start})"
    return parse_json(text)


def parse_json(text: str) -> tuple[Any, str | None]:
    if not text.strip():
        return None, "empty file"
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        cut = exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated")
        return None, f"{'truncated' if cut else 'invalid'} JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_opt_number(value: Any) -> bool:
    return value is None or _is_number(value)


def _expect(problems: list[str], ok: bool, message: str) -> None:
    if not ok:
        problems.append(message)


def cell_problem(record: Any, key: str | None = None) -> str | None:
    """What is wrong with a cell record (None: valid). Every status needs key, status and method; ``done`` needs
    ``tasks`` (task -> {score: number}), ``relacc`` and ``agreement`` (numbers or null) and ``tokens``; ``failed``
    and ``infeasible`` need their ``error`` text."""
    if not isinstance(record, dict):
        return f"a cell record is a JSON object, got {type(record).__name__}"
    problems: list[str] = []
    _expect(problems, isinstance(record.get("key"), str), "no 'key' string")
    if key is not None and isinstance(record.get("key"), str) and record["key"] != key:
        problems.append(f"its key {record['key']!r} is not its file name's {key!r}")
    status = record.get("status")
    if status not in STATUSES:
        return "; ".join(problems + [f"status {status!r} is not one of {', '.join(STATUSES)}"])
    _expect(problems, isinstance(record.get("method"), str) and bool(record.get("method")), "no 'method' string")
    budget = record.get("budget")
    _expect(problems, budget is None or (isinstance(budget, int) and not isinstance(budget, bool)), f"budget {budget!r} is not an integer or null")
    if status == "done":
        tasks = record.get("tasks")
        if not isinstance(tasks, dict):
            problems.append(f"status done without a 'tasks' mapping (got {type(tasks).__name__})")
        else:
            for task, entry in tasks.items():
                if not isinstance(entry, dict) or not _is_number(entry.get("score")):
                    problems.append(f"tasks[{task!r}] has no numeric 'score'")
                    break
        for name in ("relacc", "agreement"):
            if name not in record:
                problems.append(f"status done without '{name}'")
            elif not _is_opt_number(record[name]):
                problems.append(f"'{name}' is {record[name]!r}, not a number or null")
        _expect(problems, isinstance(record.get("tokens"), dict), "status done without a 'tokens' mapping")
    else:
        _expect(problems, isinstance(record.get("error"), str) and bool(record.get("error")), f"status {status} without its 'error' text")
    for name in ("samples_sha256",):
        _expect(problems, name not in record or isinstance(record[name], str), f"'{name}' is not a string")
    return "; ".join(problems) or None


def sample_problem(row: Any) -> str | None:
    """A per-sample row: an object with ``task`` (string), ``doc_id`` and ``answer``."""
    if not isinstance(row, dict):
        return f"a sample row is a JSON object, got {type(row).__name__}"
    missing = [k for k in ("task", "doc_id", "answer") if k not in row]
    if missing:
        return f"a sample row without {', '.join(missing)}"
    if not isinstance(row["task"], str):
        return f"a sample row's task is {row['task']!r}, not a string"
    return None


def samples_problem(text: str) -> str | None:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        row, problem = parse_json(line)
        problem = problem or sample_problem(row)
        if problem:
            return f"line {number}: {problem}"
    return None


def plan_problem(plan: Any) -> str | None:
    """plan.json: a list of ``{key, label, method, budget}`` objects."""
    if not isinstance(plan, list):
        return f"a plan is a JSON list of cells, got {type(plan).__name__}"
    for i, cell in enumerate(plan):
        if not isinstance(cell, dict) or not isinstance(cell.get("key"), str) or not isinstance(cell.get("label"), str):
            return f"cell {i} is not an object with 'key' and 'label' strings"
    return None


def partial_problem(part: str, data: Any) -> str | None:
    """A saved part of a cell in progress: ``costs`` (latency_ms, flops, kv_cache, tokens mappings) or a task
    (status; done: scores, rows, tokens {final, layer_average}; failed / infeasible: error)."""
    if not isinstance(data, dict):
        return f"a saved part is a JSON object, got {type(data).__name__}"
    if part == "costs":
        bad = [k for k in ("latency_ms", "flops", "kv_cache", "tokens") if not isinstance(data.get(k), dict)]
        return f"costs without the {', '.join(bad)} mapping(s)" if bad else None
    status = data.get("status")
    if status not in STATUSES:
        return f"status {status!r} is not one of {', '.join(STATUSES)}"
    if status != "done":
        return None if isinstance(data.get("error"), str) else f"status {status} without its 'error' text"
    if not isinstance(data.get("scores"), dict):
        return "status done without a 'scores' mapping"
    if not isinstance(data.get("rows"), list):
        return "status done without a 'rows' list"
    for row in data["rows"]:
        problem = sample_problem(row)
        if problem:
            return problem
    tokens = data.get("tokens")
    if not isinstance(tokens, dict) or not all(isinstance(tokens.get(k), list) for k in ("final", "layer_average")):
        return "status done without tokens {final, layer_average} lists"
    return None


def _samples_text(samples: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(s, default=str) + "\n" for s in samples)


def _sha256(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


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


class RunLock:
    """One writer per run folder: ``RUN/.lock`` held with ``filelock`` (an OS lock, released when the process
    exits, even by SIGKILL), its holder in ``RUN/.lock.json``. ``wait``: False fails at once with
    :class:`RunLocked` naming the holder, True waits as long as it takes, a number waits that many seconds.
    While held, the store is in repair mode and the folder's leftover ``.tmp`` files are removed."""

    def __init__(self, store: ResultStore, wait: bool | float = False, command: str | None = None):
        self.store = store
        self.path = store.root / LOCK_NAME
        self.info_path = store.root / LOCK_INFO_NAME
        self.wait = wait
        self.command = command if command is not None else " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]])
        self.created = False
        self._lock: Any = None

    def holder(self) -> str:
        info, problem = read_json(self.info_path)
        if problem or not isinstance(info, dict):
            return "another process (no holder recorded)"
        return f"pid {info.get('pid')} on {info.get('host')}, started {info.get('started')}: {info.get('command')}"

    def acquire(self) -> RunLock:
        from filelock import FileLock, Timeout

        root = self.store.root
        self._was_repair = self.store.repair
        held = root.resolve()
        if held in _HELD:  # this process holds it already (e.g. `prunebench run` around Sweep.run)
            _HELD[held] += 1
            self._nested = held
            self.store.repair = True
            return self
        if root.exists() and not root.is_dir():
            raise PruneBenchError(f"--output {root} is a file, not a folder; choose another --output (a folder path)")
        self.created = not root.exists()
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PruneBenchError(f"cannot create the run folder {root}: {exc.strerror or exc}; {os_error_fix(exc)}") from None
        timeout = -1 if self.wait is True else (0 if self.wait is False else float(self.wait))
        self._lock = FileLock(str(self.path), timeout=timeout)
        try:
            self._lock.acquire()
        except Timeout:
            raise RunLocked(
                f"{root} is in use by another prunebench run ({self.holder()}); wait for it, queue behind it with --wait, or choose another --output"
            ) from None
        except OSError as exc:
            raise PruneBenchError(f"cannot lock the run folder {root}: {exc.strerror or exc}; {os_error_fix(exc)}") from None
        _HELD[held] = 1
        self._nested = None
        try:  # the first write into the folder: a full disk or a read-only folder shows here, before any result
            info = {"pid": os.getpid(), "host": platform.node(), "started": _now(), "command": self.command}
            atomic_write_text(self.info_path, json.dumps(info) + "\n")
        except BaseException:
            self.release(failed=True)
            raise
        self.store.repair = True
        self.store.clean_stale_tmp(0)
        return self

    def release(self, failed: bool = False) -> None:
        if getattr(self, "_nested", None) is not None:
            _HELD[self._nested] -= 1
            self.store.repair = self._was_repair
            self._nested = None
            return
        if self._lock is None:
            return
        _HELD.pop(self.store.root.resolve(), None)
        self.store.repair = self._was_repair
        with _suppress():
            self.info_path.unlink()
        self._lock.release()
        self._lock = None
        if failed and self.created:  # a bad input found after the folder was made: leave nothing behind
            with _suppress():
                leftovers = {p.name for p in self.store.root.iterdir()}
                if leftovers <= {LOCK_NAME, LOCK_INFO_NAME}:
                    shutil.rmtree(self.store.root)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, exc_type, *exc: Any) -> None:
        self.release(failed=exc_type is not None)


def os_error_fix(exc: BaseException) -> str:
    """What to do about an OSError, in a few words."""
    code = getattr(exc, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT):
        return "free disk space or choose another --output on a disk with room"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "choose a writable --output or fix the folder's permissions"
    if code in (errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
        return "a file is in the way of a folder (or the reverse); choose another --output"
    if code == errno.ENOENT:
        return "check that the path exists"
    return "check the path and the disk"
