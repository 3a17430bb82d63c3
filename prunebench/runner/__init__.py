"""Sweeps: methods x budgets on a model and a suite, evaluated by lmms-eval, recorded cell by cell.

    from prunebench.runner import run_sweep
    result = run_sweep(model="tiny-llava", tasks=["shapes_count"], methods=["random"], budgets=[64], limit=4,
                       output="results/smoke")

The command line is ``prunebench run`` / ``prunebench status`` (:mod:`prunebench.runner.cli`).
"""

from __future__ import annotations

from typing import Any

from prunebench.runner.config import DEFAULTS, resolve_config
from prunebench.runner.sweep import Cell, Sweep, SweepResult


def run_sweep(config: str | None = None, progress: bool = False, **overrides: Any) -> SweepResult:
    """Run (or resume) a sweep; ``config`` is an optional YAML path, keyword arguments override it."""
    sweep = Sweep(resolve_config(config, overrides), progress=progress, echo=lambda _msg: None)
    return sweep.run()


__all__ = ["DEFAULTS", "Cell", "Sweep", "SweepResult", "resolve_config", "run_sweep"]
