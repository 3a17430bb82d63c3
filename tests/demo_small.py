"""The reduced demo: every method of ``nox -s demo`` (LearnPruner, VisPruner, random) at budget 64 plus the
unpruned baseline, on the first 10 questions of each shapes task (60 per cell).

``python tests/demo_small.py`` (or ``nox -s demo_small``) writes its leaderboard to results/reference/demo-small/,
the committed reference that tests/test_demo_reference.py compares a fresh run with, exactly.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from prunebench.cli import main

REFERENCE = Path(__file__).resolve().parents[1] / "results" / "reference" / "demo-small"
ARGS = ["--methods", "learnpruner,vispruner,random", "--budgets", "64", "--limit", "10", "--no-progress", "--latency-samples", "1", "--latency-warmup", "0"]
# the accuracy columns of leaderboard.csv: each task's score, RelAcc and agreement with the unpruned answers
ACCURACY = ("shapes_attribute", "shapes_count", "shapes_exist", "shapes_relation", "shapes_small", "shapes_background", "relacc", "agreement")


def kernels() -> dict[str, str | None]:
    """What picks this machine's fp32 CPU kernels: torch's vectorised ATen path, MKL's instruction set (its
    environment override; by default MKL picks by CPU) and the CPU. VisPruner's kept sets depend on them (see
    tests/test_demo_reference.py), so its reference cells reproduce exactly only where these are equal."""
    model = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), platform.processor())
    return {
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl_enable_instructions": os.environ.get("MKL_ENABLE_INSTRUCTIONS"),
        "cpu": model or None,
    }


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def run_demo_small(output: Path) -> Path:
    """Run the reduced demo into ``output`` (a run folder; its baseline cache goes next to it); its leaderboard.csv."""
    code = main(["run", *ARGS, "--output", str(output)])
    if code:
        raise RuntimeError(f"prunebench run {' '.join(ARGS)} exited with {code}")
    return output / "leaderboard.csv"


def accuracy_rows(leaderboard: Path) -> dict[tuple[str, str], dict[str, str]]:
    """{(method, budget): {column: value as written}} of a leaderboard.csv, accuracy columns only."""
    with leaderboard.open(newline="") as f:
        return {(row["method"], row["budget"]): {c: row[c] for c in ACCURACY} for row in csv.DictReader(f)}


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        board = run_demo_small(Path(tmp) / "demo-small")
        REFERENCE.mkdir(parents=True, exist_ok=True)
        for name in ("leaderboard.csv", "leaderboard.md"):
            shutil.copy(board.parent / name, REFERENCE / name)
        (REFERENCE / "kernels.json").write_text(json.dumps(kernels(), indent=1) + "\n")
    print(f"reference written to {REFERENCE}", file=sys.stderr)
