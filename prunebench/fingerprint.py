"""Fingerprints of what a result depends on beyond its configuration: model weights, harness code, task files.

They go into the cell key (:func:`prunebench.runner.sweep.plan_cells`) and the lmms-eval model identity, so
retraining a model, editing a method or a task YAML invalidates cached cells, baselines and responses instead of
silently reusing them.

* model: a local folder (``toy-llava`` included) -> sha256 of its files; a hub id -> the snapshot's commit hash,
  read from the local hub cache or the loaded config (no download); a built-in ``tiny-*`` model is built from
  code and a seed, both of which are already in the key, so its fingerprint is the code fingerprint;
* code: sha256 of the files of ``prunebench`` (without ``report/``, which only reads results, and the toy
  checkpoint, which is a model and fingerprinted as one), ``prunebench.methods`` and ``prunebench.suites``.
  Content, not the git commit: a commit that touches only docs or tests keeps every cell valid, an uncommitted
  edit of a method invalidates its cells. The git commit is still recorded in every record's ``env``;
* task folders (``--include_path``): sha256 of their files (YAMLs, utils, data).

Hashing a 14 GB checkpoint takes a minute, so file digests are cached by (path, size, mtime) in
``$PRUNEBENCH_CACHE`` (default ``~/.cache/prunebench``) and in this process.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_SKIP_DIRS = {"__pycache__", ".git", ".ipynb_checkpoints"}
_memory: dict[tuple[str, int, int], str] = {}
_disk: dict[str, str] | None = None  # the on-disk cache, read once per process
_unsaved: dict[str, str] = {}


def cache_dir() -> Path:
    return Path(os.environ.get("PRUNEBENCH_CACHE") or Path.home() / ".cache" / "prunebench")


def _disk_cache() -> dict[str, str]:
    global _disk
    if _disk is None:
        try:
            _disk = dict(json.loads((cache_dir() / "file-sha256.json").read_text()))
        except (OSError, ValueError, TypeError):
            _disk = {}
    return _disk


def _flush() -> None:
    from prunebench.store import atomic_write_text

    if not _unsaved:
        return
    try:
        path = cache_dir() / "file-sha256.json"
        try:
            on_disk = json.loads(path.read_text())  # another process may have added entries meanwhile
        except (OSError, ValueError):
            on_disk = {}
        atomic_write_text(path, json.dumps({**on_disk, **_unsaved}, indent=0, sort_keys=True))
        _unsaved.clear()
    except OSError:  # a read-only home only costs the re-hash next time
        pass


def file_sha256(path: str | os.PathLike, flush: bool = True) -> str:
    """sha256 of a file's bytes, cached by (absolute path, size, mtime)."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _memory:
        return _memory[key]
    disk_key = "|".join(map(str, key))
    digest = _disk_cache().get(disk_key)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                h.update(block)
        digest = h.hexdigest()
        if st.st_size >= 1 << 20:  # only large files are worth a line in the disk cache
            _disk_cache()[disk_key] = _unsaved[disk_key] = digest
            if flush:
                _flush()
    _memory[key] = digest
    return digest


def _files(root: Path, exclude: Iterable[Path] = ()) -> list[Path]:
    skip = [p.resolve() for p in exclude]
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath).resolve()
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and (here / d).resolve() not in skip)
        out += [here / f for f in sorted(filenames) if not f.endswith((".pyc", ".tmp"))]
    return out


def tree_sha256(roots: Iterable[str | os.PathLike], exclude: Iterable[str | os.PathLike] = ()) -> str:
    """One sha256 over the relative names and contents of every file under ``roots``."""
    h = hashlib.sha256()
    for root in roots:
        root = Path(root).resolve()
        if root.is_file():
            h.update(root.name.encode() + b"\0" + file_sha256(root, flush=False).encode())
            continue
        for path in _files(root, [Path(p) for p in exclude]):
            h.update(str(path.relative_to(root)).encode() + b"\0" + file_sha256(path, flush=False).encode() + b"\n")
    _flush()
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """sha256 of the harness, method and suite sources (see the module docstring)."""
    import prunebench
    import prunebench.methods
    import prunebench.suites

    pkg = Path(prunebench.__file__).resolve().parent
    from prunebench.toy import TOY_MODEL_DIR

    return tree_sha256([pkg, Path(prunebench.methods.__file__).parent, Path(prunebench.suites.__file__).parent], exclude=[pkg / "report", TOY_MODEL_DIR])


def task_fingerprint(include_paths: Iterable[str]) -> str | None:
    """sha256 of the task folders lmms-eval reads besides its own (None when there are none)."""
    paths = sorted(dict.fromkeys(str(Path(p).resolve()) for p in include_paths))
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        from prunebench.core import PruneBenchError

        raise PruneBenchError(f"--include_path folder(s) {missing} do not exist")
    return tree_sha256(paths) if paths else None


def model_fingerprint(name: str) -> dict[str, Any]:
    """What identifies the weights behind ``name``: ``{"source", "sha256" | "revision"}``."""
    from prunebench.models import DEFAULT_MODEL, TINY_MODELS

    if name in TINY_MODELS:
        return {"source": "built-in tiny model (built from prunebench's code and the seed, both part of the key)"}
    if name == DEFAULT_MODEL:
        from prunebench.toy import TOY_MODEL_DIR

        path = TOY_MODEL_DIR
    else:
        path = Path(name)
    if path.is_dir():
        return {"source": "folder", "sha256": tree_sha256([path])}
    return {"source": "hub", "revision": hub_revision(name)}


def hub_revision(repo_id: str) -> str | None:
    """The commit of the hub snapshot ``repo_id`` resolves to locally (from the cache; no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:
        found = None
    if isinstance(found, str):
        parts = Path(found).parts
        if "snapshots" in parts:
            return parts[parts.index("snapshots") + 1]
    try:
        from transformers import AutoConfig

        return getattr(AutoConfig.from_pretrained(repo_id), "_commit_hash", None)
    except Exception:
        return None


__all__ = ["code_fingerprint", "file_sha256", "hub_revision", "model_fingerprint", "task_fingerprint", "tree_sha256"]
