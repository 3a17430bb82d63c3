"""The cells of a sweep and their keys.

A cell is one (method, budget) of a sweep, or the unpruned baseline; its :class:`~prunebench.spec.CellSpec`
is built and validated here, once, and its key is a hash of everything that changes its numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prunebench.environment import versions
from prunebench.fingerprint import code_fingerprint, model_fingerprint, task_fingerprint
from prunebench.resolve import cell_spec, family_of
from prunebench.spec import ATTN_IMPLEMENTATION, NO_METHOD, CellSpec, device_type
from prunebench.store import cell_key

__all__ = ["KEY_VERSIONS", "Cell", "default_output", "key_versions", "plan_cells"]

KEY_VERSIONS = ("prunebench", "lmms_eval", "transformers", "torch")  # the versions of the code that computes a cell


@dataclass
class Cell:
    """One cell of a sweep: its spec (what runs), its key and the key's fields (what its record states)."""

    spec: CellSpec
    key: str
    fields: dict[str, Any]

    @property
    def method(self) -> str:
        return self.spec.method_name

    @property
    def budget(self) -> int | None:
        return self.spec.budget

    @property
    def params(self) -> dict[str, Any]:
        return self.spec.params

    @property
    def label(self) -> str:
        return self.spec.label


def default_output(config: dict[str, Any], model: str) -> Path:
    suite = config["suite"] if "/" not in str(config["suite"]) else Path(config["suite"]).stem
    return Path("results") / f"{Path(model).name}_{suite}_{config['budget_mode']}"


def key_versions() -> dict[str, str | None]:
    """Versions of the code that computes a cell (part of its key)."""
    every = versions()
    return {name: every[name] for name in KEY_VERSIONS}


def plan_cells(
    config: dict[str, Any], model: str, suite_tasks: list[str], generation_kwargs: dict[str, Any] | None = None, include_paths: list[str] | None = None
) -> list[Cell]:
    """The baseline and every method x budget cell, each with its spec (built and validated once) and key.

    The key covers everything that changes a cell's numbers: model and the fingerprint of its weights, the
    LLaVA-NeXT layout, how far the vision encoder runs (``vision_stop``), suite tasks, their generation overrides and the fingerprint of the task folders read
    besides lmms-eval's own, limit, seed, preprocessing, dtype, attention implementation, device type, the
    evaluation batch size (padded batches can round differently from batch 1, and a near-tie on a trained
    model then flips an answer), the latency protocol, method, every method parameter, budget, budget mode and
    scope, and the code that computes them (prunebench's version and source fingerprint; lmms-eval,
    transformers and torch versions). The baseline's key has no budget mode or scope (it prunes nothing), so
    sweeps in either mode share it.
    """
    family = family_of(model)
    options = {
        "model": model,
        "family": family,
        "seed": config["seed"],
        "batch_size": config["batch_size"],
        "layout": config.get("layout"),
        "preprocess": config["preprocess"],
        "dtype": config["dtype"],
        "attn_implementation": ATTN_IMPLEMENTATION,
        "device": device_type(config["device"]),
        "vision_stop": config.get("vision_stop", "feature"),
    }
    common = {
        "model": model,
        "weights": model_fingerprint(model),
        "suite": config["suite"],
        "task_names": sorted(suite_tasks),
        "task_files": task_fingerprint(include_paths or []),
        "limit": config["limit"],
        "generation_kwargs": dict(generation_kwargs or {}),
        "latency": dict(config["latency"]),
        "code": code_fingerprint(),
        "versions": key_versions(),
    }
    baseline = cell_spec(NO_METHOD, None, **options)
    cells = [_cell(baseline, {**common, **baseline.record(), "budget_mode": None, "budget_scope": None})]
    for method in config["methods"]:
        params = dict(config["method_args"].get(method, {}))
        for budget in config["budgets"]:
            spec = cell_spec(method, budget, params=params, budget_mode=config["budget_mode"], budget_scope=config["budget_scope"], **options)
            cells.append(_cell(spec, {**common, **spec.record()}))
    return cells


def _cell(spec: CellSpec, fields: dict[str, Any]) -> Cell:
    return Cell(spec, cell_key(fields), fields)
