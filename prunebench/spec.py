"""One cell of a benchmark, as one immutable object: :class:`CellSpec`.

A cell is everything that decides its answers: the method instance with its resolved parameters, the budget,
how the budget is counted (mode and scope), the seed, the evaluation batch size, the LLaVA-NeXT layout, the
preprocessing, the dtype, the attention implementation, the device type and how far the vision encoder runs
(``vision_stop``: to the feature layer, the default, or every layer as stock transformers: the same answers, not the
same vision time and FLOPs). The spec is built and validated once per cell (:func:`prunebench.resolve.cell_spec`),
then handed unchanged to the latency probe, the FLOP count and the lmms-eval model (:meth:`prunebench.lmms.PruneBenchLMM.configure`).

The option vocabularies are defined here once, from the layers that implement them, and imported everywhere
else: budget modes (:data:`prunebench.core.BUDGET_MODES`), budget scopes (the adapters' whole-input and
per-unit scopes), LLaVA-NeXT layouts and preprocessing modes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from prunebench.adapters.base import UNIT_SCOPES, VISION_STOPS, WHOLE_SCOPES
from prunebench.adapters.llava import PREPROCESS_MODES
from prunebench.adapters.llava_next import LAYOUTS
from prunebench.core import BUDGET_MODES, PruneBenchError, PruningMethod
from prunebench.store import BASELINE_METHOD

AVERAGE, FINAL = BUDGET_MODES  # the budget counts the layer-average visual tokens / the tokens after the last stage
BUDGET_SCOPES = WHOLE_SCOPES + UNIT_SCOPES  # image / video: one budget per input; crop / frame: per unit
PREPROCESS = PREPROCESS_MODES
NO_METHOD = BASELINE_METHOD  # the unpruned model
ATTN_IMPLEMENTATION = "sdpa"  # what prunebench loads every model with (ModelAdapter.from_pretrained)

__all__ = [
    "ATTN_IMPLEMENTATION",
    "AVERAGE",
    "BUDGET_MODES",
    "BUDGET_SCOPES",
    "FINAL",
    "LAYOUTS",
    "NO_METHOD",
    "PREPROCESS",
    "UNIT_SCOPES",
    "VISION_STOPS",
    "WHOLE_SCOPES",
    "CellSpec",
    "SpecError",
    "device_type",
    "parse_budget",
]


class SpecError(PruneBenchError):
    """A cell option is not one prunebench knows (a bad budget, mode, scope, layout, ...)."""


def parse_budget(value: Any, allow_none: bool = True) -> int | None:
    """The one budget parser: a positive whole number of visual tokens, or (``allow_none``) ``None`` / ``"none"`` /
    ``"all"`` for the unpruned model. YAML's ``2.5`` or ``true`` never quietly becomes 2 or 1."""
    if allow_none and (value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null", "all"))):
        return None
    budget: int | None = None
    if isinstance(value, bool):
        budget = None
    elif isinstance(value, int):
        budget = value
    elif isinstance(value, float) and value.is_integer():
        budget = int(value)
    elif isinstance(value, str) and value.strip().lstrip("+").isdigit():
        budget = int(value)
    if budget is None or budget <= 0:
        raise SpecError(
            f"budgets must be positive integers (visual tokens kept){', or none for the unpruned model' if allow_none else ''}, "
            f"got {value!r}; e.g. --budgets 32,64,128"
        )
    return budget


def device_type(device: Any) -> str:
    """``"cuda:1"`` -> ``"cuda"``: what kind of kernels compute the answers (the device index does not change them)."""
    return getattr(device, "type", None) or str(device or "cpu").split(":", 1)[0]


@dataclass(frozen=True)
class CellSpec:
    """One cell: built once (:func:`prunebench.resolve.cell_spec`), validated here, never modified.

    ``method`` is the resolved method instance (paper defaults, per-model table and overrides applied);
    ``budget`` is None only for the unpruned model. ``dtype`` is the requested dtype (``auto``: the
    checkpoint's), ``attn_implementation`` the attention kernels the model is loaded with.
    """

    method: PruningMethod
    budget: int | None = None
    budget_mode: str = AVERAGE
    budget_scope: str = "image"
    seed: int = 0
    batch_size: int = 1
    layout: str | None = None
    preprocess: str = "hf"
    dtype: str = "auto"
    attn_implementation: str = ATTN_IMPLEMENTATION
    device_type: str = "cpu"
    vision_stop: str = "feature"

    def __post_init__(self) -> None:
        if not isinstance(self.method, PruningMethod):
            raise SpecError(f"a cell's method must be a PruningMethod instance, got {type(self.method).__name__}")
        object.__setattr__(self, "budget", parse_budget(self.budget))
        if self.budget is not None and self.method.name == NO_METHOD:
            raise SpecError("method 'none' is the unpruned model; it takes no budget (use budget=none)")
        _choice(self.budget_mode, BUDGET_MODES, "budget_mode")
        _choice(self.budget_scope, BUDGET_SCOPES, "budget_scope")
        _choice(self.preprocess, PREPROCESS, "preprocess")
        _choice(self.vision_stop, VISION_STOPS, "vision_stop")
        if self.layout is not None:
            _choice(self.layout, LAYOUTS, "layout (LLaVA-NeXT)")
        for name in ("seed", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise SpecError(f"{name} must be an integer, got {value!r}")
        if self.batch_size < 1:
            raise SpecError(f"batch_size must be >= 1, got {self.batch_size}")
        object.__setattr__(self, "device_type", device_type(self.device_type))

    @property
    def method_name(self) -> str:
        return self.method.name

    @property
    def params(self) -> dict[str, Any]:
        """Every resolved parameter of the method."""
        return self.method.params()

    @property
    def label(self) -> str:
        return "none (unpruned)" if self.method_name == NO_METHOD else f"{self.method_name}@{self.budget}"

    def record(self) -> dict[str, Any]:
        """The spec as record / key fields (JSON values; the method as its name and parameters)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "method"}
        return {"method": self.method_name, "method_params": self.params, **out}

    def pruner_options(self) -> dict[str, Any]:
        """Keyword arguments of :class:`prunebench.engine.Pruner` (and of the FLOP count) besides adapter, method, budget."""
        return {"budget_mode": self.budget_mode, "seed": self.seed, "budget_scope": self.budget_scope}

    def replace(self, **changes: Any) -> CellSpec:
        """A new spec with ``changes`` (validated again)."""
        return CellSpec(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **changes})


def _choice(value: Any, allowed: tuple[str, ...], name: str) -> None:
    if value not in allowed:
        raise SpecError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
