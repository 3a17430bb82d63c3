"""The hook interface every pruning method implements.

A method is a small dataclass: its fields are the paper's hyper-parameters (defaults = the paper's), and it
implements one ``select`` per stage where it acts plus ``plan``, which maps a budget to per-stage keep counts.
Everything mechanical (running the vision tower, gathering tokens, masks, positions, the KV cache, timing,
FLOPs) lives in :mod:`prunebench.engine` and the model adapters, once, for every method.
A method that only ranks tokens subclasses :class:`prunebench.bases.ScoredVisionPruner` or
:class:`prunebench.bases.ScoredLLMPruner` and writes ``score(view)``; this module sits below the views and the
bases and imports neither.

Stages
    * **vision stage**: after the vision encoder, before the LLM. ``select_vision(view, keep)`` sees a
      :class:`VisionView` (features of the selected ViT layer, lazily computed [CLS]/received attention, keys,
      projected embeddings, the patch grid) and returns a :class:`Selection` of ``keep`` tokens, optionally with
      merged tokens placed before/after the kept ones (VisionZip's [CLS] and contextual tokens).
    * **LLM stage at decoder layer K**: ``select_llm(view, keep)`` runs just before decoder layer K during
      prefill and sees a :class:`LayerView` (hidden states entering layer K, where the visual tokens are, and
      attention rows of layer K-1 computed from its captured queries and keys). Layers K.. then run on the
      kept tokens only, and their KV cache holds only them.

Budget contract: ``budget`` counts visual tokens. In ``average`` mode it is the mean over the
LLM's decoder layers during prefill of the visual tokens each layer sees; in ``final`` mode it is the count
left after the last stage. :meth:`PruningMethod.plan` returns a :class:`Plan`; the engine checks that the plan
meets the budget under the chosen mode (average mode: exactly for a vision-only plan, otherwise within the
rounding of the last stage's integer count, :func:`check_plan_meets_budget`) and that the measured per-layer
counts equal the plan.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

BudgetMode = Literal["average", "final"]
PositionPolicy = Literal["compact", "original"]
BUDGET_MODES = ("average", "final")


class PruneBenchError(Exception):
    """Base class of the errors prunebench raises for bad input; the message says what to do."""


class BudgetError(PruneBenchError, ValueError):
    """The budget is not a positive integer or exceeds the visual tokens of the input."""


class InfeasibleBudget(PruneBenchError):
    """The method cannot meet this budget under this budget mode (reported as an infeasible cell)."""


class UnsupportedModel(PruneBenchError):
    """The method is undefined on this model family or input (e.g. a [CLS]-only rule on a tower without [CLS]).

    Raised from ``plan`` or a stage's ``select`` with a one-line reason; the sweep records the cell as refused
    and the conformance kit records the refusal as a pass of a refusal, not a skip.
    """


class SelectionError(PruneBenchError, RuntimeError):
    """A method's ``select`` returned a malformed selection (wrong count, out-of-range or repeated indices)."""


@dataclass(frozen=True)
class Plan:
    """Per-stage keep counts for one input.

    ``vision``: visual tokens entering the LLM (None: the vision stage keeps all ``num_visual`` tokens).
    ``llm``: ``{K: keep}``: before decoder layer K only ``keep`` visual tokens remain.
    """

    num_visual: int
    num_layers: int
    vision: int | None = None
    llm: dict[int, int] = field(default_factory=dict)

    def tokens_per_layer(self) -> list[int]:
        """Visual tokens seen by each decoder layer during prefill."""
        count = self.num_visual if self.vision is None else self.vision
        cuts = dict(self.llm)
        counts = []
        for layer in range(self.num_layers):
            count = cuts.get(layer, count)
            counts.append(count)
        return counts

    @property
    def final_tokens(self) -> int:
        return self.tokens_per_layer()[-1]

    @property
    def average_tokens(self) -> float:
        counts = self.tokens_per_layer()
        return sum(counts) / len(counts)

    def validate(self) -> None:
        previous = self.num_visual if self.vision is None else self.vision
        if self.vision is not None and not 0 < self.vision <= self.num_visual:
            raise InfeasibleBudget(f"vision stage keeps {self.vision} of {self.num_visual} visual tokens")
        for layer in sorted(self.llm):
            keep = self.llm[layer]
            if not 1 <= layer < self.num_layers:
                raise InfeasibleBudget(f"LLM stage at layer {layer} outside 1..{self.num_layers - 1}")
            if not 0 < keep <= previous:
                raise InfeasibleBudget(f"layer {layer} would keep {keep} of {previous} visual tokens")
            previous = keep


@dataclass(frozen=True)
class PlanContext:
    """What ``plan`` may look at: the input's visual token count and the model's depth."""

    num_visual: int
    num_layers: int
    mode: BudgetMode = "average"

    def plan(self, vision: int | None = None, llm: dict[int, int] | None = None) -> Plan:
        return Plan(self.num_visual, self.num_layers, vision, dict(llm or {}))


@dataclass
class Selection:
    """What a stage keeps.

    ``keep``: (B, k) indices into the stage's candidate visual tokens, ascending (original order).
    ``prepend`` / ``append``: optional (B, m, D) merged tokens placed before / after the kept tokens. At the
    vision stage they live in the space of ``VisionView.features`` (before the projector).
    """

    keep: torch.Tensor
    prepend: torch.Tensor | None = None
    append: torch.Tensor | None = None

    @property
    def num_tokens(self) -> int:
        extra = sum(t.shape[1] for t in (self.prepend, self.append) if t is not None)
        return self.keep.shape[1] + extra

    def validate(self, batch: int, num_candidates: int, expected: int, where: str) -> None:
        keep = self.keep
        fix = "return Selection(prunebench.top_k(scores, keep)) (or Selection.sorted(indices))"
        if keep.dim() != 2 or keep.shape[0] != batch or keep.dtype not in (torch.int64, torch.int32):
            raise SelectionError(f"{where}: keep must be a (batch={batch}, k) integer tensor, got {tuple(keep.shape)} {keep.dtype}; {fix}")
        if self.num_tokens != expected:
            merged = self.num_tokens - keep.shape[1]
            raise SelectionError(
                f"{where}: the plan keeps {expected} tokens but the selection holds {self.num_tokens} "
                f"({keep.shape[1]} kept + {merged} merged); return exactly `keep` = {expected} tokens per sample, "
                f"kept indices plus any merged tokens: {fix}"
            )
        if keep.numel():
            if int(keep.min()) < 0 or int(keep.max()) >= num_candidates:
                raise SelectionError(
                    f"{where}: indices must lie in [0, {num_candidates}), got [{int(keep.min())}, {int(keep.max())}]; they "
                    "index the stage's candidate visual tokens (view.num_tokens / view.num_visual), not sequence positions"
                )
            if keep.shape[1] > 1 and not bool((keep[:, 1:] > keep[:, :-1]).all()):
                raise SelectionError(f"{where}: indices must be strictly ascending (original order, no repeats); use Selection.sorted(...) or prunebench.top_k")
        for name, extra in (("prepend", self.prepend), ("append", self.append)):
            if extra is not None and (extra.dim() != 3 or extra.shape[0] != batch):
                raise SelectionError(f"{where}: {name} must be (batch, m, dim) merged tokens, got {tuple(extra.shape)}")
            if extra is not None and not bool(torch.isfinite(extra).all()):
                raise SelectionError(f"{where}: the {name}ed merged tokens hold NaN or infinite values; check the merge (e.g. a mean over an empty group)")

    @staticmethod
    def sorted(indices: torch.Tensor, **extra: Any) -> Selection:
        """A selection from indices in any order (e.g. topk output); sorts them into original order."""
        return Selection(indices.sort(dim=-1).values, **extra)


def ranked(scores: torch.Tensor) -> torch.Tensor:
    """(B, N) indices by descending score, ties to the lower index (a stable sort).

    ``torch.topk`` leaves the order of equal scores to the kernel (CPU and CUDA differ), so every ranking in
    prunebench goes through this one rule: equal scores, lower index first.
    """
    return scores.sort(dim=-1, descending=True, stable=True).indices


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """(B, k) indices of the k largest scores per row, in original order; equal scores: the lower index wins.

    The originals rank with ``torch.topk``, whose order on exact ties is the kernel's; prunebench breaks them
    by position on every path (single image, per crop / frame, vision and LLM stages), so a kept set is the
    same on every device.
    """
    return ranked(scores)[..., :k].sort(dim=-1).values


stable_top_k = top_k  # the name the per-unit helpers of :mod:`prunebench.views` use


class PruningMethod:
    """Base class of every pruning method. Subclasses are dataclasses registered with ``@register_method``.

    Class attributes a method declares:
        ``stages``: subset of ``("vision", "llm")``.
        ``signals``: the signals it reads (documentation and ``prunebench list``).
        ``position_policy``: ``"compact"`` renumbers the shortened sequence 0..L'-1 (the pre-LLM originals on
        LLaVA); ``"original"`` keeps each kept token's position in the unpruned prompt (FastV, in-LLM methods).
        ``paper`` / ``citation``: where it comes from.
    """

    name: ClassVar[str] = ""
    stages: ClassVar[tuple[str, ...]] = ()
    signals: ClassVar[tuple[str, ...]] = ()
    position_policy: ClassVar[PositionPolicy] = "compact"
    paper: ClassVar[str] = ""
    citation: ClassVar[str] = ""
    trainable: ClassVar[bool] = False

    # -- budget -----------------------------------------------------------------------------------------
    def plan(self, budget: int, ctx: PlanContext) -> Plan:
        raise NotImplementedError

    # -- stages -----------------------------------------------------------------------------------------
    def vision_layers(self, num_vision_layers: int, feature_layer: int) -> tuple[int, ...]:
        """ViT encoder layers (0-based) whose queries/keys the method's vision signals need captured."""
        return ()

    def llm_signal_layers(self, plan: Plan) -> tuple[int, ...]:
        """Decoder layers whose queries/keys are captured during prefill (default: the layer before each cut)."""
        return tuple(layer - 1 for layer in plan.llm)

    def select_vision(self, view: Any, keep: int) -> Selection:
        """``view``: a :class:`prunebench.views.VisionView` (core sits below the views, so it is not named here)."""
        raise NotImplementedError(f"{self.name} has no vision stage")

    def select_llm(self, view: Any, keep: int) -> Selection:
        """``view``: a :class:`prunebench.views.LayerView`."""
        raise NotImplementedError(f"{self.name} has no LLM stage")

    # -- description --------------------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)} if dataclasses.is_dataclass(self) else {}

    def describe(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{self.name}({args})"


class VisionStagePruner(PruningMethod):
    """A method that prunes once, between the vision encoder and the LLM: budget = tokens entering the LLM."""

    stages = ("vision",)

    def plan(self, budget: int, ctx: PlanContext) -> Plan:
        return ctx.plan(vision=budget)


class SingleCutLLMPruner(PruningMethod):
    """A method that prunes once inside the LLM, before decoder layer ``layer`` (FastV-style).

    ``final`` mode keeps ``budget`` tokens from layer K on. ``average`` mode solves
    (K * N + (L - K) * keep) / L = budget for keep; a budget below K * N / L is infeasible.
    """

    stages = ("llm",)
    position_policy = "original"
    layer: int = 2

    def plan(self, budget: int, ctx: PlanContext) -> Plan:
        cut = self.layer
        if not 1 <= cut < ctx.num_layers:
            raise InfeasibleBudget(f"{self.name}: layer={cut} must lie in 1..{ctx.num_layers - 1} for a {ctx.num_layers}-layer LLM")
        return ctx.plan(llm={cut: solve_single_cut(budget, ctx, cut, self.name)})


def solve_single_cut(budget: int, ctx: PlanContext, cut: int, name: str = "method", before: int | None = None) -> int:
    """Keep count after a cut at layer ``cut`` so that the plan meets ``budget`` under ``ctx.mode``.

    ``before``: visual tokens entering the LLM (default: all). Average mode rounds to the nearest integer.
    The one-stage case of :func:`solve_cuts`.
    """
    return solve_cuts(budget, ctx, (cut,), name=name, before=before)[0]


def solve_cuts(
    budget: int, ctx: PlanContext, cuts: Sequence[int], shape: Sequence[float] | None = None, name: str = "method", before: int | None = None
) -> list[int]:
    """Keep counts after LLM cuts at layers ``cuts`` (ascending) so that the plan meets ``budget`` under ``ctx.mode``.

    ``shape``: the stages' relative sizes (e.g. a published schedule's fractions; default: one stage per cut,
    all alike); ``before``: visual tokens entering the LLM (default: all of them).
      * ``final`` mode: the last stage keeps ``budget``; an earlier stage keeps its ``shape`` ratio to the last
        times the budget, at least the budget and at most ``before``;
      * ``average`` mode: counts k_i proportional to ``shape`` (capped at ``before``, at least 1, never growing
        from one stage to the next) with sum_i span_i * k_i = budget * L - cuts[0] * before, where span_i is the
        number of layers stage i serves; nearest integers, the rounding residual on the last stage. One stage
        gives the nearest-integer solution of (K * before + (L - K) * keep) / L = budget.
    A budget below what the unpruned layers 0..cuts[0]-1 already spend is :class:`InfeasibleBudget`.
    """
    before = ctx.num_visual if before is None else before
    cuts = list(cuts)
    shape = [1.0] * len(cuts) if shape is None else [float(f) for f in shape]
    if not cuts or len(shape) != len(cuts):
        raise ValueError(f"solve_cuts needs one shape entry per cut, got {len(shape)} for cuts {cuts}")
    if ctx.mode == "final":
        return [min(before, max(budget, round(f / shape[-1] * budget))) for f in shape[:-1]] + [budget]
    depth = ctx.num_layers
    spans = [b - a for a, b in zip(cuts, cuts[1:] + [depth])]
    free = budget * depth - cuts[0] * before  # token-layers left after the unpruned layers 0..cuts[0]-1
    if free < sum(spans):
        lowest = math.ceil((cuts[0] * before + sum(spans)) / depth)
        raise InfeasibleBudget(
            f"{name} prunes at layer {cuts[0]} of {depth}: {'layer 0 sees' if cuts[0] == 1 else f'layers 0..{cuts[0] - 1} see'} all {before} visual tokens, "
            f"so the layer average cannot go below {lowest}; use a budget >= {lowest} or --budget-mode final"
        )
    capped = [False] * len(shape)
    for _ in range(len(shape) + 1):  # stages whose share exceeds ``before`` keep everything; rescale the rest
        fixed = sum(s * before for s, c in zip(spans, capped) if c)
        weight = sum(s * f * before for s, f, c in zip(spans, shape, capped) if not c)
        exact = [(free - fixed) * (f * before) / weight if weight else 0.0 for f in shape]
        new = [c or e > before for e, c in zip(exact, capped)]
        if new == capped:
            break
        capped = new
    counts = [before if c else max(1, round(e)) for e, c in zip(exact, capped)]
    residual = free - sum(s * k for s, k in zip(spans, counts))
    counts[-1] = max(1, min(counts[-2] if len(counts) > 1 else before, counts[-1] + round(residual / spans[-1])))
    for i in range(1, len(counts)):
        counts[i] = min(counts[i], counts[i - 1])
    return counts


def check_budget(budget: Any, num_visual: int) -> int:
    """Validate a user-supplied budget against the input's visual tokens."""
    if isinstance(budget, bool) or (not isinstance(budget, (int,)) and not (isinstance(budget, float) and budget.is_integer())):
        raise BudgetError(f"budget must be a positive integer number of visual tokens, got {budget!r}")
    budget = int(budget)
    if budget <= 0:
        raise BudgetError(f"budget must be a positive integer number of visual tokens, got {budget}")
    if budget > num_visual:
        raise BudgetError(f"budget {budget} exceeds the {num_visual} visual tokens of this input; choose a budget <= {num_visual}")
    return budget


def average_tolerance(plan: Plan) -> float:
    """How far an average-mode plan's layer average may lie from its budget: the rounding of integer counts.

    A plan that prunes only before the LLM keeps the same count in every layer: it must equal the budget (0).
    With LLM cuts, the last at layer K of L, the count kept from K on moves the layer average in steps of
    (L - K) / L once the earlier stages are fixed; the nearest-integer count lands within half a step, so the
    plan may miss the budget by at most (L - K) / (2L). A single cut one token away from the nearest-integer
    solution (FastV's keep off by one) is out of tolerance.
    """
    if not plan.llm:
        return 0.0
    return (plan.num_layers - max(plan.llm)) / (2 * plan.num_layers)


def check_plan_meets_budget(plan: Plan, budget: int, mode: BudgetMode, name: str) -> None:
    """The budget contract: a plan whose token count misses the budget is infeasible, never silently altered.

    ``final`` mode: the count after the last stage equals the budget. ``average`` mode: a plan without LLM
    cuts averages exactly the budget; with cuts, the average lies within :func:`average_tolerance` of it (the
    last stage keeps the nearest-integer solution given the earlier stages).
    """
    plan.validate()
    if mode == "final":
        if plan.final_tokens != budget:
            raise InfeasibleBudget(f"{name}: plan ends with {plan.final_tokens} visual tokens, budget is {budget} (final mode)")
        return
    # in token-layers, all integers: |average - budget| <= (L - K) / 2L  <=>  2 |sum - budget * L| <= L - K
    miss = abs(sum(plan.tokens_per_layer()) - budget * plan.num_layers)
    if not plan.llm and miss:
        raise InfeasibleBudget(
            f"{name}: plan keeps {plan.average_tokens:.0f} visual tokens in every layer, budget is {budget} (average mode); "
            "a plan that prunes only before the LLM must keep exactly the budget"
        )
    if plan.llm and 2 * miss > plan.num_layers - max(plan.llm):
        raise InfeasibleBudget(
            f"{name}: plan averages {plan.average_tokens:.3f} visual tokens per layer, budget is {budget} (average mode); "
            f"integer counts allow a miss of at most {average_tolerance(plan):.3f}: the count kept from layer "
            f"{max(plan.llm)} on must be the nearest-integer solution given the earlier stages "
            "(prunebench.core.solve_single_cut computes it)"
        )
