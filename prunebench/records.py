"""Cell records and the other files of a run folder: their validation, JSON reading and the atomic write.

The record fields and what each file must hold are described in :mod:`prunebench.store`; every file is validated
before it is trusted (:func:`cell_problem`, :func:`sample_problem`, :func:`plan_problem`, :func:`partial_problem`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

BASELINE_METHOD = "none"
STATUSES = ("done", "failed", "infeasible")


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
