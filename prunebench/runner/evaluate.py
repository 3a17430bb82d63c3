"""The sweep's side of lmms-eval: the task index, the latency probe's documents, one evaluation call, and a
stderr that hides lmms-eval's progress-bar redraws.

lmms-eval is optional for everything but evaluating: ``prunebench run --dry-run``, ``status``, ``report``, ``plot``
and ``list`` work without it. So this module imports lmms_eval only inside the functions that evaluate (each such
import is marked ``lazy: lmms_eval``).
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import sys
from collections.abc import Callable
from typing import Any

from prunebench.core import PruneBenchError
from prunebench.models.inputs import flatten_visuals, question_text

log = logging.getLogger("prunebench.runner")

__all__ = ["DropRedraws", "cached_task_manager", "evaluate", "probe_samples", "task_index"]


@functools.lru_cache(maxsize=8)
def cached_task_manager(include_path: tuple[str, ...] = (), include_defaults: bool = True) -> Any:
    """lmms-eval's task index, shared by every sweep in this process. With ``include_defaults`` it indexes lmms-eval's
    ~2000 bundled tasks too (seconds); without, only the folders in ``include_path`` (milliseconds)."""
    from lmms_eval.tasks import TaskManager  # lazy: lmms_eval

    return TaskManager("WARNING", include_path=list(include_path) or None, include_defaults=include_defaults)


def task_index(tasks: list[str], include_paths: list[str]) -> Any:
    """The smallest task index that knows every task of ``tasks``: the include paths alone when they hold them all
    (a suite of its own tasks does not pay for indexing lmms-eval's), else lmms-eval's tasks as well. Unknown
    tasks are an error naming them."""
    paths = tuple(include_paths)
    if paths:
        own = cached_task_manager(paths, include_defaults=False)
        if all(t in own.all_tasks for t in tasks):
            return own
    manager = cached_task_manager(paths)
    missing = [t for t in tasks if t not in manager.all_tasks]
    if missing:
        raise PruneBenchError(f"lmms-eval does not know task(s) {missing}; check the names (`lmms-eval tasks list`) or add their folder with --include_path")
    return manager


def probe_samples(task_manager: Any, tasks: list[str], count: int, make_sample: Callable[..., Any]) -> list[Any]:
    """The first ``count`` documents of the suite, round-robin over its tasks, as engine samples.

    ``make_sample(task, doc_index, question, visuals)`` builds one (:meth:`prunebench.lmms.PruneBenchLMM.make_sample`).
    """
    from lmms_eval.tasks import get_task_dict  # lazy: lmms_eval

    leaves: list[tuple[str, Any]] = []

    def walk(d: dict) -> None:
        for name, obj in d.items():
            if isinstance(obj, dict):
                walk(obj)
            elif isinstance(obj, tuple):
                if obj[1] is not None:
                    leaves.append((name if isinstance(name, str) else str(name), obj[1]))
            elif obj is not None:
                leaves.append((getattr(name, "group_name", name) if not isinstance(name, str) else name, obj))

    walk(get_task_dict(tasks, task_manager))
    if not leaves:
        raise PruneBenchError(f"no tasks found for {tasks}")
    docs = [(name, task, list(task.eval_docs)) for name, task in leaves]
    out: list[Any] = []
    broken: dict[str, str] = {}
    index = 0
    while len(out) < count and any(index < len(d) for name, _, d in docs if name not in broken):
        for name, task, items in docs:
            if index < len(items) and len(out) < count and name not in broken:
                doc = items[index]
                try:
                    visuals = flatten_visuals(task.doc_to_visual(doc))
                    out.append(make_sample(name, index, question_text(task.doc_to_text(doc)), visuals))
                except Exception as exc:
                    broken[name] = f"{type(exc).__name__}: {exc}"
                    log.warning("latency probe: skipping task %s (%s)", name, broken[name])
        index += 1
    if not out:
        raise PruneBenchError(f"no latency probe samples could be built from {tasks}: {broken or 'the tasks have no documents'}")
    return out


def evaluate(lm: Any, tasks: list[str], task_manager: Any, config: dict[str, Any], gen_kwargs: str, foreign_progress: bool = False) -> dict[str, Any]:
    """``tasks`` through ``lmms_eval.evaluator.simple_evaluate`` with the live model ``lm`` (the sweep's settings)."""
    from lmms_eval.evaluator import simple_evaluate  # lazy: lmms_eval

    seed = config["seed"]
    with contextlib.redirect_stderr(sys.stderr if foreign_progress else DropRedraws(sys.stderr)):
        results = simple_evaluate(
            model=lm,
            model_args=lm.model_args,
            tasks=list(tasks),
            task_manager=task_manager,
            limit=config["limit"],
            batch_size=config["batch_size"],
            device=config["device"],
            log_samples=True,
            bootstrap_iters=0,
            verbosity="WARNING",
            gen_kwargs=gen_kwargs,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            process_docs_parallel=1,
        )
    if results is None:
        raise RuntimeError("lmms-eval returned no results")
    return results


class DropRedraws(io.TextIOBase):
    """A stderr for lmms-eval that drops tqdm's redraws and passes everything else, warnings and log lines, through.

    A redraw is a write starting with a carriage return. Around it a bar below position 0 (nested under the
    sweep's own bar, or under bars lmms-eval left open when a task raised) moves the cursor with bare newlines and
    cursor-ups, and a closing bar writes a newline: writes made only of those are dropped unless they end a line
    of real text (``print`` writes its newline separately)."""

    def __init__(self, stream: Any):
        self.stream = stream
        self._line_open = False  # the last text passed through did not end its line

    def write(self, text: str) -> int:
        if text.startswith("\r"):
            return len(text)
        if not self._line_open and text.strip("\n\x1b[A ") == "":
            return len(text)
        self._line_open = not text.endswith("\n")
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True
