"""Model and method resolution: which family a model is, which method instance a name means on it, and the
:class:`~prunebench.spec.CellSpec` of a cell.

Used by the sweep (``prunebench run``), by the lmms-eval model (``lmms-eval --model prunebench``) and by
``prunebench run --dry-run``; nothing here needs lmms-eval.
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig

from prunebench.core import PlanContext, PruneBenchError, PruningMethod
from prunebench.models import DEFAULT_MODEL, TINY_MODELS
from prunebench.models.defaults import resolve_method
from prunebench.spec import ATTN_IMPLEMENTATION, AVERAGE, NO_METHOD, CellSpec

__all__ = ["NO_METHOD", "NoPruning", "adapter_options", "cell_spec", "check_layout", "family_of", "resolve"]


class NoPruning(PruningMethod):
    """The unpruned model (method ``none``): every stage keeps every token."""

    name = NO_METHOD
    stages = ()

    def plan(self, budget: int, ctx: PlanContext):
        return ctx.plan()


def family_of(model: str) -> str:
    """The family (``config.model_type``) of a prunebench model name, hub id or folder; "" when it cannot be read
    (the model load reports that properly later)."""
    if model in TINY_MODELS:
        return TINY_MODELS[model]
    if model == DEFAULT_MODEL:
        return "llava"
    try:
        return AutoConfig.from_pretrained(model).model_type
    except Exception:
        return ""


def adapter_options(preprocess: str = "hf", layout: str | None = None, vision_stop: str = "feature") -> dict[str, Any]:
    """``load_model`` options for the non-default preprocessing / layout / vision stop (the defaults are the adapters' own)."""
    options: dict[str, Any] = {}
    if preprocess != "hf":
        options["preprocess"] = preprocess
    if layout is not None:
        options["layout"] = layout
    if vision_stop != "feature":
        options["vision_stop"] = vision_stop
    return options


def check_layout(family: str, layout: str | None) -> None:
    if layout is not None and family != "llava_next":
        raise PruneBenchError(f"layout={layout!r} applies to LLaVA-NeXT models only; this model is {family or 'of an unknown family'}. Drop the layout option")


def resolve(method: str, model: str, family: str, params: dict[str, Any] | None = None) -> PruningMethod:
    """The method instance for ``method`` on ``model``: paper defaults, then the per-model table, then ``params``."""
    if method == NO_METHOD:
        if params:
            raise PruneBenchError(f"method 'none' (the unpruned baseline) takes no parameters, got {sorted(params)}")
        return NoPruning()
    return resolve_method(method, model, family, **(params or {}))


def cell_spec(
    method: str | PruningMethod,
    budget: Any,
    *,
    model: str = DEFAULT_MODEL,
    family: str | None = None,
    params: dict[str, Any] | None = None,
    budget_mode: str = AVERAGE,
    budget_scope: str = "image",
    seed: int = 0,
    batch_size: int = 1,
    layout: str | None = None,
    preprocess: str = "hf",
    dtype: str = "auto",
    attn_implementation: str = ATTN_IMPLEMENTATION,
    device: Any = "cpu",
    vision_stop: str = "feature",
) -> CellSpec:
    """The validated spec of one cell; ``method`` is a name (resolved on ``model`` with ``params``) or an instance."""
    if isinstance(method, PruningMethod):
        if params:
            raise PruneBenchError("pass either a method instance or a method name with params, not both")
        instance = method
    else:
        instance = resolve(method, model, family_of(model) if family is None else family, params)
    return CellSpec(
        instance,
        budget,
        budget_mode=budget_mode,
        budget_scope=budget_scope,
        seed=seed,
        batch_size=batch_size,
        layout=layout,
        preprocess=preprocess,
        dtype=dtype,
        attn_implementation=attn_implementation,
        device_type=device,
        vision_stop=vision_stop,
    )
