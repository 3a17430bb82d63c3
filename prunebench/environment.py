"""What code and machine computed a result: package versions, the git commit, the CPU load.

:func:`versions` is the one place the version dict is built (cell keys, cell records and training recipes use it).
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
import transformers

from prunebench import __version__


@functools.lru_cache(maxsize=1)
def versions() -> dict[str, str | None]:
    """Versions of the code that computes a result: prunebench, lmms-eval (None when not installed), transformers,
    torch and Python."""
    return {
        "prunebench": __version__,
        "lmms_eval": package_version("lmms_eval"),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def package_version(name: str) -> str | None:
    """An installed distribution's version, None when it is not installed (never imports it)."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """The commit of the prunebench checkout (``-dirty`` with uncommitted changes); None outside a git checkout."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("-dirty" if dirty else "")) if commit else None


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average() -> float | None:
    """The 1-minute load average (runnable processes), None where the platform has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def host() -> dict[str, Any]:
    return {"host": platform.node(), "threads": torch.get_num_threads(), "cpus": cpu_count()}
