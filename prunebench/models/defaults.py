"""Per-model method defaults (``method_defaults.yaml``), resolved into a method instance."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from prunebench.core import PruningMethod

TABLE = Path(__file__).with_name("method_defaults.yaml")


@lru_cache(maxsize=1)
def _table() -> dict[str, dict[str, dict[str, Any]]]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(TABLE), resolve=True) or {}


def model_defaults(method: str, model: str, family: str = "") -> dict[str, Any]:
    """Overrides of ``method``'s paper defaults for ``model`` (family entry, then model entry)."""
    table = _table()
    resolved: dict[str, Any] = {}
    for key in (family, model):
        resolved.update((table.get(key) or {}).get(method) or {})
    return resolved


def resolve_method(method: str, model: str, family: str = "", **overrides: Any) -> PruningMethod:
    """``create_method`` with the per-model table applied, then ``overrides`` (CLI/config) on top."""
    from prunebench.registry import create_method

    return create_method(method, **{**model_defaults(method, model, family), **overrides})
