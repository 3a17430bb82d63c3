"""lmms-eval tasks of the built-in shapes world (``prunebench.toy.world``), fully offline.

One task per question family plus the group ``shapes``. The data are the parameters of the fixed
``test`` split (``test_<family>.jsonl``, ~17 KB each); images are rendered on the fly by
``utils.doc_to_visual``. lmms-eval 0.7.3 resolves the relative ``data_files`` against the YAML's own
folder, so the suite loads from any working directory. Use with
``TaskManager(include_path=str(TASK_DIR))`` / ``--include_path``.
"""

from pathlib import Path

TASK_DIR = Path(__file__).resolve().parent
GROUP = "shapes"
FAMILIES = ("attribute", "count", "exist", "relation", "small", "background")
TASKS = [f"shapes_{f}" for f in FAMILIES]

__all__ = ["FAMILIES", "GROUP", "TASKS", "TASK_DIR"]
