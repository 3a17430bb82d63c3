"""Suites: a named list of lmms-eval tasks with an include path, default generation kwargs and a description.

``load_suite(name_or_path)`` accepts a built-in name (``shapes``: the offline shapes world; ``image`` and
``video``: the YAMLs next to this file) or the path of a suite YAML with the same keys::

    name: my_suite
    description: what it measures
    tasks: [task_a, task_b]          # lmms-eval task or group names
    include_path: path/to/yamls      # optional; relative paths resolve against the suite file
    generation_kwargs: {max_new_tokens: 16}   # optional; merged into every task's own kwargs
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prunebench.core import PruneBenchError

SUITE_DIR = Path(__file__).resolve().parent
DEFAULT_SUITE = "shapes"


@dataclass
class Suite:
    name: str
    tasks: list[str]
    description: str = ""
    include_path: list[str] = field(default_factory=list)
    generation_kwargs: dict[str, Any] = field(default_factory=dict)

    def gen_kwargs_string(self) -> str | None:
        """``generation_kwargs`` in lmms-eval's ``k=v,...`` form (None when empty)."""
        if not self.generation_kwargs:
            return None
        return ",".join(f"{k}={v}" for k, v in self.generation_kwargs.items())

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tasks": list(self.tasks),
            "description": self.description,
            "include_path": list(self.include_path),
            "generation_kwargs": dict(self.generation_kwargs),
        }


def shapes_suite() -> Suite:
    from prunebench.suites.shapes import TASK_DIR, TASKS

    return Suite(
        name="shapes",
        tasks=list(TASKS),
        description="Offline shapes world (prunebench.toy.world): attribute, count, exist, relation, small objects and "
        "background questions on rendered scenes, exact-match scored; runs without network on the shipped toy model.",
        include_path=[str(TASK_DIR)],
    )


def builtin_suites() -> list[str]:
    return sorted({"shapes", *(p.stem for p in SUITE_DIR.glob("*.yaml"))})


def load_suite(name_or_path: str = DEFAULT_SUITE, tasks: list[str] | None = None) -> Suite:
    """The suite ``name_or_path``; ``tasks`` (e.g. from ``--tasks``) replaces its task list."""
    if name_or_path == "shapes":
        suite = shapes_suite()
    else:
        path = Path(name_or_path)
        if not path.suffix:
            path = SUITE_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise PruneBenchError(f"unknown suite {name_or_path!r}: use one of {', '.join(builtin_suites())} or the path of a suite YAML")
        suite = _from_yaml(path)
    if tasks:
        suite.tasks = list(tasks)
    if not suite.tasks:
        raise PruneBenchError(f"suite {suite.name!r} names no tasks")
    return suite


def _from_yaml(path: Path) -> Suite:
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(OmegaConf.load(path), resolve=True) or {}
    unknown = sorted(set(data) - {"name", "tasks", "description", "include_path", "generation_kwargs"})
    if unknown:
        raise PruneBenchError(f"suite file {path} has unknown keys {unknown}; allowed: name, tasks, description, include_path, generation_kwargs")
    include = data.get("include_path") or []
    include = [include] if isinstance(include, str) else list(include)
    include = [str((path.parent / p).resolve()) if not Path(p).is_absolute() else p for p in include]
    return Suite(
        name=data.get("name") or path.stem,
        tasks=list(data.get("tasks") or []),
        description=data.get("description") or "",
        include_path=include,
        generation_kwargs=dict(data.get("generation_kwargs") or {}),
    )
