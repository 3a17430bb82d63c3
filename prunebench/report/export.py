"""Copy a finished run folder to another place as a self-contained reference (``results/reference/demo``).

Only what a reader needs travels: ``plan.json``, ``config.yaml``, ``suite.json``, the record of every planned cell
(``cells/``) with its per-sample log (``samples/``), and ``leaderboard.md`` / ``leaderboard.csv``. Cells of earlier
plans, cells in progress (``partial/``), locks, set-aside damaged files and figures stay behind, so the copy is
small and reads like any run folder (``prunebench report``, ``plot`` and ``compare`` take it).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from prunebench.core import PruneBenchError

TOP_FILES = ("plan.json", "config.yaml", "suite.json", "leaderboard.md", "leaderboard.csv")


def export_run(source: str | Path, target: str | Path) -> list[Path]:
    """Replace ``target`` by the reference copy of the run folder ``source``; returns the files written."""
    source, target = Path(source), Path(target)
    plan_path = source / "plan.json"
    if not plan_path.is_file() or not (source / "cells").is_dir():
        raise PruneBenchError(f"{source} is not a finished run folder (no plan.json and cells/); run `prunebench run --output {source}` first")
    plan = json.loads(plan_path.read_text())
    keys = [str(c["key"]) for c in plan if isinstance(c, dict) and "key" in c]
    missing = [k for k in keys if not (source / "cells" / f"{k}.json").is_file()]
    if missing:
        raise PruneBenchError(f"{source}: {len(missing)} planned cell(s) have no record (e.g. {missing[0]}); finish the run first")
    if target.exists():
        shutil.rmtree(target)
    written = []
    for name in TOP_FILES:
        if (source / name).is_file():
            target.mkdir(parents=True, exist_ok=True)
            written.append(Path(shutil.copy2(source / name, target / name)))
    for key in keys:
        for sub, suffix in (("cells", ".json"), ("samples", ".jsonl")):
            path = source / sub / f"{key}{suffix}"
            if path.is_file():
                (target / sub).mkdir(parents=True, exist_ok=True)
                written.append(Path(shutil.copy2(path, target / sub / path.name)))
    return written


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3:
        sys.exit("usage: python -m prunebench.report.export RUN TARGET")
    files = export_run(sys.argv[1], sys.argv[2])
    print(f"wrote {len(files)} files to {sys.argv[2]}")
