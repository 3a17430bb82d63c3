"""PyramidDrop: rank visual tokens by the last instruction token's attention at a few LLM layers, dropping a
fixed share at each (a pyramid of visual token counts)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from prunebench.core import InfeasibleBudget, Plan, PlanContext, PruneBenchError, PruningMethod, Selection, check_plan_meets_budget
from prunebench.registry import register_method
from prunebench.views import LayerView, stable_top_k

PAPER_LAYERS = (8, 16, 24)  # the README's layer_list for LLaVA-1.5-7B / NeXT-7B (32 layers), 1-based "after layer"
STANDARD_LAYERS = (2, 10, 20)  # the layer list of the configurations in circulation for the 64/128/192 budgets
REFERENCE_DEPTH = 32
POSITIONS = ("auto", "renumber", "original")
SCORE_LAYERS = ("next", "previous")


def scaled_layers(layers: tuple[int, ...], depth: int) -> tuple[int, ...]:
    """``layers`` (written for a 32-layer LLM) at depth ``depth``: round(l * depth / 32), kept distinct and
    increasing inside 1..depth-1 (Qwen2.5-VL's 28 layers: (8, 16, 24) -> (7, 14, 21); a 4-layer LLM: (1, 2, 3))."""
    cuts: list[int] = []
    for i, layer in enumerate(layers):
        room = depth - (len(layers) - i)  # the last cut must leave at least one layer after it
        cuts.append(max(min(round(layer * depth / REFERENCE_DEPTH), room), cuts[-1] + 1 if cuts else 1))
    return tuple(cuts)


def pyramid_counts(num_visual: int, ratios: list[float]) -> list[int]:
    """int(N * ratio) per stage, as the authors' code computes each stage's count from the original N."""
    return [max(1, min(num_visual, math.floor(num_visual * r + 1e-9))) for r in ratios]


@register_method("pdrop")
@dataclass
class PyramidDrop(PruningMethod):
    """PyramidDrop (Xing et al., "PyramidDrop: Accelerating Your Large Vision-Language Models via Pyramid Visual
    Redundancy Reduction", CVPR 2025, arXiv 2410.17247; code github.com/Cooperx521/PyramidDrop @ 6444f30,
    ``llava/model/modeling_llama_pdrop.py`` ``pdrop_forward`` / ``pdrop_rank_drop``), inference-only mode.

    Algorithm (as the authors' code does it): the LLM runs in S = 3 stages separated by ``layers`` (1-based
    "after layer l", i.e. the cut is made before 0-based decoder layer l); stage s keeps n_s = int(N * ratio_s)
    visual tokens, N the sample's original count. At each boundary, before decoder layer l runs:
      1. x = layers[l].input_layernorm(h) on the hidden states entering it; q of the **last instruction token**
         (the prompt's last token) and k of every token from layers[l]'s own q/k projections, RoPE at the
         tokens' current positions (``LayerView.layer_attention``), softmax of the causal row in fp32;
      2. score = mean over heads of that row at the visual tokens still present; keep the top n_{s+1} in
         original order (``ranked`` ties: lower index);
      3. the kept sequence is **renumbered** 0..L'-1 and a generated token continues each stage's own numbering
         (its position shifted down by the tokens dropped before that stage), as ``pdrop_forward``'s decode
         branch does (the engine's ``llm_position_policy="renumber"``).

    Ratios and the budget. The paper's default is ``layers`` (8, 16, 24) with ratio λ = 0.5 between stages,
    ratios [0.5, 0.25, 0.125]: a 270-token layer average on LLaVA-1.5 (576 tokens, 32 layers). The authors
    published no configuration for the 192/128/64 budgets (their issues #10, #22, #27, #28); the one in circulation
    for "128" is layers (2, 10, 20), ratios [0.32, 0.16, 0.08] (exactly 128.0). prunebench keeps λ (``lam``) and
    solves the first ratio ρ from the budget, ratios ρ·[1, λ, λ²] (capped at 1):
      * ``average`` mode: the layer average equals the budget: ρ from (l1·N + Σ span_s·N·ρ·λ^(s-1))/L = B,
        earlier stages int(N·ratio), the last stage the nearest-integer count given them (the harness's
        rounding contract). ``layers="auto"`` = (2, 10, 20): 192 -> ρ 0.542 (312/156/78 tokens), 128 -> ρ 0.32
        (184/92/46, the circulating config), 64 -> ρ 0.097 (56/28/14); a budget below l1·N/L (plus one token per
        later layer) is infeasible and says so. ``layers="paper"`` = (8, 16, 24): only budgets above 144 are
        reachable on LLaVA-1.5; budget 270 gives the README's 288/144/72;
      * ``final`` mode: the last stage keeps B, earlier stages B/λ, B/λ² (capped at N).
    ``ratios`` (e.g. ``0.5,0.25,0.125``) runs an authors' list verbatim instead; the budget must then be one that
    list meets (the error names it). ``"auto"`` / ``"paper"`` are scaled to the model's depth (:func:`scaled_layers`;
    Qwen2.5-VL: (8, 16, 24) -> (7, 14, 21), the authors' code having no Qwen port); explicit layers run verbatim.

    Deviations, each deliberate:
      * the softmax row stays fp32 (the code casts it to fp16 before the head mean; near-ties may differ); the
        mask is built per sample (the code builds it for batch size 1, an issue for padded batches);
      * ``score_layer="previous"`` scores with the attention layer l-1 already computed (captured q/k, as FastV)
        instead of recomputing layer l's projections: cheaper, not the authors' rule;
      * Qwen2.5-VL (no author code): kept tokens keep their 3-D M-RoPE positions (renumbering is undefined for
        (t, h, w) positions): ``positions="original"``, set for the family in the per-model defaults table;
      * LLaVA-NeXT: the authors rank the AnyRes ``image_newline`` tokens with the image tokens; prunebench never
        makes them candidates (they stay, outside the budget), so N counts the image tokens only.
    """

    layers: str | tuple[int, ...] = "auto"
    lam: float = 0.5
    ratios: str | tuple[float, ...] = "auto"
    positions: str = "auto"
    score_layer: str = "next"

    stages = ("llm",)
    signals = ("attention of the last instruction token at each stage's first layer (its norm, q/k, RoPE)",)
    position_policy = "original"
    paper = "Xing et al., CVPR 2025 (arXiv 2410.17247)"
    citation = "xing2025pyramiddrop"

    def __post_init__(self) -> None:
        if isinstance(self.layers, str) and self.layers not in ("auto", "paper"):
            self.layers = tuple(int(x) for x in self.layers.replace(" ", "").split(",") if x)
        if not isinstance(self.layers, str):
            self.layers = tuple(int(x) for x in self.layers)
            if not self.layers or list(self.layers) != sorted(set(self.layers)) or self.layers[0] < 1:
                raise PruneBenchError(f"pdrop layers must be increasing 1-based layer counts, got {self.layers}")
        if isinstance(self.ratios, str) and self.ratios != "auto":
            self.ratios = tuple(float(x) for x in self.ratios.replace(" ", "").split(",") if x)
        if not isinstance(self.ratios, str):
            self.ratios = tuple(float(x) for x in self.ratios)
            if not all(0 < r <= 1 for r in self.ratios) or list(self.ratios) != sorted(self.ratios, reverse=True):
                raise PruneBenchError(f"pdrop ratios must be non-increasing shares in (0, 1], got {self.ratios}")
        if not 0 < self.lam <= 1:
            raise PruneBenchError(f"pdrop lam (the ratio between consecutive stages) must lie in (0, 1], got {self.lam}")
        if self.positions not in POSITIONS:
            raise PruneBenchError(f"pdrop positions must be one of {POSITIONS}, got {self.positions!r}")
        if self.score_layer not in SCORE_LAYERS:
            raise PruneBenchError(f"pdrop score_layer must be one of {SCORE_LAYERS}, got {self.score_layer!r}")

    @property
    def llm_position_policy(self) -> str:
        """``renumber`` (the authors' code) unless ``positions="original"`` (M-RoPE models)."""
        return "original" if self.positions == "original" else "renumber"

    # -- budget -------------------------------------------------------------------------------------------
    def cuts(self, num_layers: int) -> tuple[int, ...]:
        """0-based decoder layers before which each stage prunes."""
        layers = {"auto": STANDARD_LAYERS, "paper": PAPER_LAYERS}.get(self.layers, self.layers) if isinstance(self.layers, str) else self.layers
        cuts = scaled_layers(tuple(layers), num_layers) if isinstance(self.layers, str) else tuple(layers)
        if cuts[-1] >= num_layers or len(cuts) >= num_layers:
            raise InfeasibleBudget(f"pdrop: layers {list(layers)} need more than the {num_layers} decoder layers of this LLM; set layers=")
        if not isinstance(self.ratios, str) and len(self.ratios) != len(cuts):
            raise PruneBenchError(f"pdrop: {len(self.ratios)} ratios for {len(cuts)} layers; give one ratio per layer")
        return cuts

    def plan(self, budget: int, ctx: PlanContext) -> Plan:
        n, depth = ctx.num_visual, ctx.num_layers
        cuts = self.cuts(depth)
        if not isinstance(self.ratios, str):
            return self._verbatim(budget, ctx, cuts)
        stages = len(cuts)
        if ctx.mode == "final":
            counts = [min(n, max(budget, round(budget / self.lam ** (stages - 1 - s)))) for s in range(stages - 1)] + [budget]
            return ctx.plan(llm=dict(zip(cuts, counts)))
        spans = [b - a for a, b in zip(cuts, cuts[1:] + (depth,))]
        target = budget * depth
        lowest = cuts[0] * n + sum(spans)  # every pruned layer keeping one token
        if target < lowest:
            raise InfeasibleBudget(
                f"pdrop prunes first before layer {cuts[0]} of {depth}: those layers see all {n} visual tokens, so the layer "
                f"average cannot go below {math.ceil(lowest / depth)}; use a budget >= {math.ceil(lowest / depth)}, earlier "
                "layers (layers=2,10,20) or --budget-mode final"
            )

        def seen(rho: float) -> float:
            return cuts[0] * n + sum(span * min(n, n * rho * self.lam**s) for s, span in enumerate(spans))

        lo, hi = 0.0, 1.0 / self.lam ** (stages - 1)
        for _ in range(100):  # seen() is increasing in rho: bisection
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if seen(mid) < target else (lo, mid)
        rho = (lo + hi) / 2
        counts = pyramid_counts(n, [min(1.0, rho * self.lam**s) for s in range(stages - 1)])
        for s in range(1, len(counts)):
            counts[s] = min(counts[s], counts[s - 1])
        rest = target - cuts[0] * n - sum(span * c for span, c in zip(spans, counts))
        last = round(rest / spans[-1])
        counts.append(max(1, min(last, counts[-1] if counts else n)))
        return ctx.plan(llm=dict(zip(cuts, counts)))

    def _verbatim(self, budget: int, ctx: PlanContext, cuts: tuple[int, ...]) -> Plan:
        plan = ctx.plan(llm=dict(zip(cuts, pyramid_counts(ctx.num_visual, list(self.ratios)))))
        try:
            check_plan_meets_budget(plan, budget, ctx.mode, self.name)
        except InfeasibleBudget:
            meets = plan.final_tokens if ctx.mode == "final" else f"{plan.average_tokens:g} (the integer within rounding of it)"
            raise InfeasibleBudget(
                f"pdrop ratios={list(self.ratios)} at layers {list(cuts)} keep {plan.tokens_per_layer()[-1]} tokens after the last "
                f"stage and {plan.average_tokens:g} per layer on average for {ctx.num_visual} visual tokens: in {ctx.mode} mode they "
                f"meet budget {meets}, not {budget}; use that budget, or ratios=auto to derive them from the budget"
            ) from None
        return plan

    # -- selection ----------------------------------------------------------------------------------------
    def select_llm(self, view: LayerView, keep: int) -> Selection:
        rows = view.last_index
        attn = view.layer_attention(rows) if self.score_layer == "next" else view.attention(rows)  # (B, H, 1, L)
        scores = attn.mean(1)[:, 0].gather(1, view.visual_index)
        return Selection(stable_top_k(scores, keep))
