"""SparseVLM: text-guided, training-free pruning of visual tokens inside the LLM at several layers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from prunebench.core import (
    InfeasibleBudget,
    Plan,
    PlanContext,
    PruneBenchError,
    PruningMethod,
    Selection,
    check_plan_meets_budget,
    top_k,
)
from prunebench.registry import register_method
from prunebench.views import LayerView, RecycledSelection

# The authors' schedules for LLaVA-1.5-7B (576 visual tokens, 32 layers), keyed by their budget label: the
# tokens each pruning layer {2, 6, 15} keeps by top-k (methods-1.md §2.4; v1.5 = branch v1.5, v2.0 = main with
# USE_VERSION=2_0). A v1.5 entry counts the top-k tokens only: the c merged tokens of that layer come on top
# (300 kept at layer 2 + 9 merged = 309 tokens seen by layers 3-6).
SCHEDULES: dict[str, dict[int, tuple[int, int, int]]] = {
    "1.5": {192: (300, 200, 110), 128: (303, 110, 36), 96: (238, 48, 26), 64: (66, 30, 17)},
    "2.0": {192: (300, 200, 118), 128: (238, 108, 60), 96: (246, 54, 28), 64: (66, 34, 20)},
}
REFERENCE_TOKENS = 576
PAPER_LAYERS = (2, 6, 15)
REFERENCE_DEPTH = 32
SCHEDULE_MODES = ("auto", "paper", "scaled")


def recycled_clusters(pruned: int, recycle_share: float = 0.3, cluster_share: float = 0.1) -> tuple[int, int]:
    """(n1 candidates, c clusters) of v1/v1.5's recycling for ``pruned`` pruned tokens (methods-1.md §2.3):
    n1 = int(0.3·pruned) + 1, c = int(n1/10) + 1."""
    n1 = min(pruned, int(recycle_share * pruned) + 1)
    return n1, min(n1, int(n1 * cluster_share) + 1)


def paper_counts(version: str, label: int, num_visual: int = REFERENCE_TOKENS) -> tuple[int, ...]:
    """Visual tokens the layers after each pruning layer see under the authors' schedule ``label``: v2.0 the
    top-k counts min(k, N_v - 1); v1.5 those plus the merged tokens (309/204/113 for "192")."""
    counts, current = [], num_visual
    for k in SCHEDULES[version][label]:
        k = min(k, current - 1)
        current = k + (recycled_clusters(current - k)[1] if version == "1.5" else 0)
        counts.append(current)
    return tuple(counts)


def paper_budgets(version: str, mode: str = "average") -> dict[int, float]:
    """{authors' label: what prunebench measures for that schedule} on LLaVA-1.5-7B (576 tokens, 32 layers):
    in ``average`` mode the mean over the 32 layers of the visual tokens each layer sees (layers 0-2 see all
    576), in ``final`` mode the tokens after layer 15. v2.0: 192 -> 206.75, 128 -> 144.125, 96 -> 113.94,
    64 -> 81.81 (final 118/60/28/20); v1.5: 206.5, 145.41, 114.09, 82.25 (final 113/39/27/18)."""
    spans = [PAPER_LAYERS[i + 1] - PAPER_LAYERS[i] for i in range(len(PAPER_LAYERS) - 1)]
    spans.append(REFERENCE_DEPTH - 1 - PAPER_LAYERS[-1])
    out = {}
    for label in SCHEDULES[version]:
        counts = paper_counts(version, label)
        if mode == "final":
            out[label] = float(counts[-1])
        else:
            seen = (PAPER_LAYERS[0] + 1) * REFERENCE_TOKENS + sum(s * c for s, c in zip(spans, counts))
            out[label] = seen / REFERENCE_DEPTH
    return out


def _schedule_shape(version: str, budget_576: float) -> list[float]:
    """Fractions of N that the layers after each pruning layer see under the authors' schedule at
    ``budget_576`` (budget rescaled to 576 tokens; v1.5 with its merged tokens).

    Between the published budgets the fractions are interpolated linearly; outside [64, 192] the nearest
    published schedule's shape is used.
    """
    table = {label: paper_counts(version, label) for label in SCHEDULES[version]}
    budgets = sorted(table)
    b = min(max(budget_576, budgets[0]), budgets[-1])
    for lo, hi in zip(budgets, budgets[1:]):
        if lo <= b <= hi:
            t = (b - lo) / (hi - lo)
            return [((1 - t) * x + t * y) / REFERENCE_TOKENS for x, y in zip(table[lo], table[hi])]
    return [x / REFERENCE_TOKENS for x in table[budgets[0]]]


def dpc_knn(x: torch.Tensor, clusters: int, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """TCFormer-style density-peak clustering (SparseVLM's ``DPC_KNN``), batched.

    x: (B, n, C) fp32; noise: (B, n) uniform numbers (the original's unseeded ``torch.rand``, here seeded per
    sample). Returns (centres (B, c) indices into n, assignment (B, n) cluster ids in 0..c-1).
    """
    bsz, n, dim = x.shape
    dist = torch.cdist(x, x) / math.sqrt(dim)
    knn = dist.topk(min(clusters, n), dim=-1, largest=False).values  # includes the token itself
    density = (-(knn**2).mean(-1)).exp() + noise * 1e-6
    higher = density[:, None, :] > density[:, :, None]  # [i, j]: j is denser than i
    far = dist.flatten(1).max(dim=1).values[:, None, None]
    delta = torch.where(higher, dist, far).min(dim=-1).values
    centres = (delta * density).topk(clusters, dim=-1).indices  # (B, c)
    to_centre = dist.gather(2, centres[:, None, :].expand(-1, n, -1))  # (B, n, c)
    assign = to_centre.argmin(dim=-1)
    assign.scatter_(1, centres, torch.arange(clusters, device=x.device).expand(bsz, -1))
    return centres, assign


@register_method("sparsevlm")
@dataclass
class SparseVLM(PruningMethod):
    """SparseVLM (Zhang et al., "SparseVLM: Visual Token Sparsification for Efficient VLM Inference",
    arXiv 2410.04417, ICML 2025; methods-1.md §2). ``version="2.0"`` (default) = "SparseVLM+" (main branch,
    ``USE_VERSION=2_0``); ``version="1.5"`` = the ICML branch. v1 (rank-based counts, per-benchmark
    scale/bias) is not offered: its token count is data-dependent, which no fixed budget can express.

    Algorithm (both versions):
      1. text raters, once per prefill, from the LLM input embeddings E: S = V·Tᵀ between the visual tokens V
         and all tokens T after the image; p = softmax over T, mean over V; raters = {t : p_t > mean(p)};
      2. at each pruning layer ℓ in ``layers`` (0-based; the layer runs on the full sequence and its
         *output* is pruned, i.e. the harness's LLM stage before layer ℓ+1 reading layer ℓ's q/k):
         A = softmax attention of layer ℓ from the rater rows to the visual tokens, fp32, from captured q/k;
         v2.0: A ← A / R with R[i, j] = q1ᵢ·k1ⱼ/√d, q1 = k1 = all-ones vectors rotated by RoPE at the tokens'
         position ids (computed from the model's own cos/sin tables), then keep the ``heads`` heads with the
         largest Σ A over raters × visual (14 in the code); v1.5: all heads;
         rel = mean over kept heads and raters; keep the top tokens in original order;
      3. v1.5 recycling: of the pruned tokens, the n1 = int(0.3·pruned)+1 with the highest rel are clustered
         by density-peak k-NN (c = int(n1/10)+1 clusters, on the layer-ℓ output hidden states) and each
         cluster's mean becomes one token (merged tokens count as visual tokens and can be pruned later).
    No [CLS] is involved anywhere (the signals are the LLM's own embeddings and attention), so Qwen2.5-VL needs
    no replacement signal: its captured q/k carry M-RoPE, and v2.0's R is computed from the model's M-RoPE
    cos/sin tables (the all-ones identity R = Σ_d cos_i·cos_j + sin_i·sin_j still holds, since both halves of
    the recomposed tables are equal), not from the 1-D closed form.

    Budget and schedules (``schedule``). The authors label their runs "192/128/96/64" and count, for each
    layer, the visual tokens *after* that layer's own pruning (issue #24: 192.03). prunebench counts what each
    layer *sees* (DESIGN.md: equal prefill compute), so a pruning layer counts its full input, and the
    authors' tuples measure more than their labels (schedule entries are top-k counts; v1.5's merged tokens
    come on top of them):

        ======  ==================  ===================  =========================  ==========================
        label   v2.0 k@2, 6, 15     v2.0 average / final  v1.5 k@2, 6, 15 (+merged)  v1.5 average / final
        ======  ==================  ===================  =========================  ==========================
        192     300, 200, 118       206.75 / 118         300, 200, 110 (309,204,113) 206.5 / 113
        128     238, 108, 60        144.13 / 60          303, 110, 36 (312,117,39)   145.41 / 39
        96      246, 54, 28         113.94 / 28          238, 48, 26 (249,55,27)     114.09 / 27
        64      66, 34, 20          81.81 / 20           66, 30, 17 (82,32,18)       82.25 / 18
        ======  ==================  ===================  =========================  ==========================

    The harness enforces its budget in both modes (:func:`prunebench.core.check_plan_meets_budget`), so an
    authors' tuple is reachable exactly at a budget it meets by that contract, on the model it was written for
    (576 visual tokens, 32 layers, layers 2/6/15):
      * ``schedule="paper"``: the authors' tuple verbatim; budget B must be one its measured counts meet:
        final mode, the last count (v2.0 118/60/28/20, v1.5 113/39/27/18); average mode, the integer within
        the harness's rounding allowance of its layer average (±0.25 token here: half a token over the last
        stage's 16 layers): 207, 144, 114, 82 for v2.0, but only 114 and 82 for v1.5, whose "192" (206.5) and
        "128" (145.41) fall between integers (run those in final mode). E.g. ``--budgets 82`` runs the
        authors' v2.0 "64" and records 81.81 as its layer average; any other budget is infeasible, with a
        message naming these;
      * ``schedule="scaled"``: the *shape* of the authors' schedule for the budget (per-layer fractions of N,
        interpolated between the published labels, v1.5 with its merged tokens) scaled so that the plan meets
        B as prunebench counts it (average mode: layer average = B; final mode: the last stage keeps B and
        earlier stages keep the schedule's ratios to it). This serves any budget, model and depth. A stage
        whose scaled count is not below the tokens it receives prunes (and recycles) nothing there, where the
        authors' k = min(., N_v - 1) always prunes at least one token;
      * ``schedule="auto"`` (default): the authors' tuple where it meets B exactly as above, otherwise
        ``scaled``. So ``--budgets 64`` compares methods at an equal 64-token layer average (the authors' "64"
        would spend 81.81 there), and ``--budgets 82`` reproduces the authors' run.
    Other depths take their pruning layers from the per-model defaults table.

    Deviations, each deliberate:
      * positions (``positions``): v2.0 keeps the kept tokens' original (gapped) position ids; v1.5 renumbers
        every layer after a cut 0..n'-1 and a generated token takes each layer's own cache length as its
        position, as the published code does (the engine's ``llm_position_policy="renumber"``); with left
        padding "cache length" means the valid tokens cached, so a batch equals its samples run alone.
        M-RoPE models (Qwen2.5-VL): a renumbered 1-D index has no meaning for 3-D (t, h, w) positions (the
        published code is LLaMA-only), so v1.5 there keeps each kept token's original M-RoPE position
        (``positions="original"``, set for the qwen2_5_vl family in the per-model defaults table, DESIGN.md's
        rule for Qwen) and recycles in slot (below); the engine refuses renumbering on M-RoPE models;
      * recycling (``recycle``): v1.5 appends the merged tokens right after the kept visual tokens, as
        published (``"append"``, needs renumbered positions); ``"inplace"`` instead gives each merged token its
        cluster centre's slot (a pruned token revived with the cluster mean) and keeps original positions;
        ``"none"`` switches recycling off (what v2.0 does). ``"auto"``: append where v1.5 renumbers, in slot
        where it keeps original positions, none for v2.0;
      * scores in fp32 from captured q/k instead of the original fp16 materialised softmax, and the raters'
        similarity to the image in fp32 too (the original: fp16 input embeddings, so a rater near the mean
        threshold can flip); per-sample raters and scores (the originals read batch element 0); the clustering
        noise is seeded per sample;
      * Video-LLaVA: the image algorithm runs on the video's tokens (these layers and schedules, rescaled to the
        video's token count). The authors' video branch (methods-1.md §2.6: one cut at layer 1, k = the rank of
        the rater x visual attention matrix, v1 merging; 2048 -> 135 tokens) is not implemented, so video
        cells are not the published video numbers;
      * v2.0's division by R can divide by values near 0 or below 0 (R is a sum of cosines);
        ``rope_correction="divide"`` reproduces it, ``"clamp"`` divides by max(R, ``rope_floor``),
        ``"none"`` skips the correction (and the head selection uses the plain attention).
    """

    version: str = "2.0"
    layers: Sequence[int] | str = "auto"  # "auto": PAPER_LAYERS, scaled by depth/32 where they do not fit
    schedule: str = "auto"  # "auto" | "paper" | "scaled" (see the docstring's table)
    heads: int = 14
    recycle: str = "auto"  # "auto": append for v1.5 (in slot with original positions), none for v2.0
    positions: str = "auto"  # "auto": renumber for v1.5, original for v2.0
    rope_correction: str = "divide"
    rope_floor: float = 1e-3
    recycle_share: float = 0.3
    cluster_share: float = 0.1

    signals = ("LLM input embeddings (text raters)", "LLM attention rater rows -> visual at each pruning layer")
    position_policy = "original"
    paper = "Zhang et al., ICML 2025 (arXiv 2410.04417); v2.0 = SparseVLM+ (main branch)"
    citation = "zhang2025sparsevlm"
    stages = ("llm",)

    def __post_init__(self) -> None:
        self.version = str(self.version)
        if self.version not in SCHEDULES:
            raise PruneBenchError(f"sparsevlm version must be '2.0' (SparseVLM+) or '1.5' (ICML), got {self.version!r}")
        if self.recycle not in ("auto", "append", "inplace", "none"):
            raise PruneBenchError(f"sparsevlm recycle must be 'auto', 'append', 'inplace' or 'none', got {self.recycle!r}")
        if self.positions not in ("auto", "renumber", "original"):
            raise PruneBenchError(f"sparsevlm positions must be 'auto', 'renumber' or 'original', got {self.positions!r}")
        if self.recycle == "append" and self.llm_position_policy != "renumber":
            raise PruneBenchError("sparsevlm recycle='append' places merged tokens by renumbering; use positions='renumber' "
                                  "(or recycle='inplace' with original positions)")
        if self.schedule not in SCHEDULE_MODES:
            raise PruneBenchError(f"sparsevlm schedule must be one of {', '.join(SCHEDULE_MODES)}, got {self.schedule!r}")
        if self.rope_correction not in ("divide", "clamp", "none"):
            raise PruneBenchError(f"sparsevlm rope_correction must be 'divide', 'clamp' or 'none', got {self.rope_correction!r}")
        if isinstance(self.layers, str) and self.layers != "auto":
            self.layers = tuple(int(x) for x in self.layers.replace(" ", "").split(",") if x)
        if self.layers != "auto":
            self.layers = tuple(int(x) for x in self.layers)
            if not self.layers or list(self.layers) != sorted(set(self.layers)) or self.layers[0] < 0:
                raise PruneBenchError(f"sparsevlm layers must be increasing 0-based layer indices, got {self.layers}")

    # -- budget -------------------------------------------------------------------------------------------
    @property
    def recycling(self) -> str:
        """"append" (v1.5 as published), "inplace" (merged token in its centre's slot) or "none" (v2.0)."""
        if self.recycle == "auto":
            if self.version != "1.5":
                return "none"
            return "append" if self.llm_position_policy == "renumber" else "inplace"
        return self.recycle

    @property
    def llm_position_policy(self) -> str:
        """How the engine numbers positions after each stage: v1.5 renumbers per layer, v2.0 keeps the originals."""
        if self.positions == "auto":
            return "renumber" if self.version == "1.5" else "original"
        return self.positions

    def pruning_layers(self, num_layers: int) -> tuple[int, ...]:
        """The 0-based layers whose outputs are pruned: ``layers``, or for "auto" the paper's (2, 6, 15) where
        they fit (any LLM of 17+ layers, e.g. Qwen2.5-VL's 28) and otherwise the same depth fractions
        (layer·L/32, made distinct), e.g. (0, 1, 2) for a 4-layer LLM."""
        if self.layers != "auto":
            return tuple(self.layers)
        if PAPER_LAYERS[-1] + 1 < num_layers:
            return PAPER_LAYERS
        scaled: list[int] = []
        for i, layer in enumerate(PAPER_LAYERS):
            room = num_layers - 2 - (len(PAPER_LAYERS) - 1 - i)  # leave room for the later stages
            scaled.append(max(min(round(layer * num_layers / REFERENCE_DEPTH), room), scaled[-1] + 1 if scaled else 0))
        return tuple(scaled)

    def cuts(self, num_layers: int) -> list[int]:
        layers = self.pruning_layers(num_layers)
        cuts = [layer + 1 for layer in layers]
        if cuts[-1] >= num_layers:
            raise InfeasibleBudget(
                f"sparsevlm prunes the outputs of layers {list(layers)}, which needs more than {num_layers} decoder "
                f"layers; set layers= for this model (per-model defaults: prunebench/models/method_defaults.yaml)"
            )
        return cuts

    def plan(self, budget: int, ctx: PlanContext) -> Plan:
        n, depth = ctx.num_visual, ctx.num_layers
        cuts = self.cuts(depth)
        if self.schedule != "scaled":
            label = self.paper_label(budget, ctx)
            if label is not None:
                return ctx.plan(llm=dict(zip(cuts, paper_counts(self.version, label))))
            if self.schedule == "paper":
                raise InfeasibleBudget(self._no_paper_schedule(budget, ctx))
        shape = _schedule_shape(self.version, budget * REFERENCE_TOKENS / n)
        if len(cuts) != len(shape):  # other layer counts: interpolate the schedule's fractions over the stages
            xs = torch.linspace(0, len(shape) - 1, len(cuts)).tolist()
            shape = [shape[int(x)] + (x - int(x)) * (shape[min(int(x) + 1, len(shape) - 1)] - shape[int(x)]) for x in xs]
        if ctx.mode == "final":
            counts = [min(n, max(budget, round(f / shape[-1] * budget))) for f in shape[:-1]] + [budget]
            return ctx.plan(llm=dict(zip(cuts, counts)))
        spans = [b - a for a, b in zip(cuts, cuts[1:] + [depth])]
        free = budget * depth - cuts[0] * n  # token-layers left after the unpruned layers 0..cut0-1
        if free < sum(spans):
            lowest = math.ceil((cuts[0] * n + sum(spans)) / depth)
            raise InfeasibleBudget(
                f"sparsevlm prunes first before layer {cuts[0]} of {depth}: those layers see all {n} visual tokens, so "
                f"the layer average cannot go below {lowest}; use a budget >= {lowest} or --budget-mode final"
            )
        counts = _scale_to(shape, spans, free, n)
        return ctx.plan(llm=dict(zip(cuts, counts)))

    def paper_label(self, budget: int, ctx: PlanContext) -> int | None:
        """The authors' budget label whose schedule meets ``budget`` under ``ctx.mode``; None if none does or
        this is not the model the schedules were written for."""
        labels = [label for label, served in self.paper_schedule_budgets(ctx).items() if served == budget]
        return labels[0] if labels else None

    def paper_schedule_budgets(self, ctx: PlanContext) -> dict[int, int | None]:
        """{authors' label: the budget at which its schedule meets the harness's contract in ``ctx.mode``
        (:func:`prunebench.core.check_plan_meets_budget`), or None where no integer budget does}; empty unless
        ``ctx`` is LLaVA-1.5-7B's shape (576 tokens, 32 layers) with the paper's pruning layers."""
        if (ctx.num_visual, ctx.num_layers) != (REFERENCE_TOKENS, REFERENCE_DEPTH) or self.pruning_layers(ctx.num_layers) != PAPER_LAYERS:
            return {}
        cuts = self.cuts(ctx.num_layers)
        served: dict[int, int | None] = {}
        for label, measured in paper_budgets(self.version, ctx.mode).items():
            plan = ctx.plan(llm=dict(zip(cuts, paper_counts(self.version, label))))
            served[label] = None
            for budget in dict.fromkeys((math.floor(measured), math.ceil(measured))):
                try:
                    check_plan_meets_budget(plan, budget, ctx.mode, self.name)
                except InfeasibleBudget:
                    continue
                served[label] = budget
                break
        return served

    def _no_paper_schedule(self, budget: int, ctx: PlanContext) -> str:
        served = self.paper_schedule_budgets(ctx)
        if not served:
            return (f"sparsevlm schedule='paper': the authors published schedules only for {REFERENCE_TOKENS} visual tokens, "
                    f"{REFERENCE_DEPTH} layers and pruning layers {PAPER_LAYERS}; this input has {ctx.num_visual} tokens and "
                    f"{ctx.num_layers} layers (layers {self.pruning_layers(ctx.num_layers)}); use schedule='scaled'")
        measured = paper_budgets(self.version, ctx.mode)
        listed = "; ".join(
            f"\"{label}\" measures {measured[label]:g}: " + (f"budget {b}" if b is not None else "no integer budget in this mode")
            for label, b in served.items()
        )
        return (f"sparsevlm v{self.version} schedule='paper': no published schedule meets budget {budget} in {ctx.mode} mode "
                f"(prunebench counts the visual tokens each layer sees, the authors each layer's output): {listed}. "
                f"Use one of those budgets (the other budget mode for the rest), or schedule='scaled' for {budget}")

    # -- selection ----------------------------------------------------------------------------------------
    def select_llm(self, view: LayerView, keep: int) -> Selection:
        rel = self.relevance(view)
        n = view.num_visual
        if self.recycling == "none":
            return Selection(top_k(rel, keep))
        kept_count = self.kept_before_recycling(n, keep)
        kept = top_k(rel, kept_count)
        return self._recycle(view, rel, kept, keep - kept_count)

    def kept_before_recycling(self, n: int, total: int) -> int:
        """k such that k kept + c(k) merged tokens = ``total`` (c from the pruned count, as in the code)."""
        k = total - 1
        while k > 1 and k + self.clusters(n - k)[1] > total:
            k -= 1
        return k

    def clusters(self, pruned: int) -> tuple[int, int]:
        """(n1 candidates, c clusters) for ``pruned`` pruned tokens: n1 = int(0.3 p) + 1, c = int(n1/10) + 1."""
        return recycled_clusters(pruned, self.recycle_share, self.cluster_share)

    def raters(self, view: LayerView) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows (B, r) in the current sequence and a (B, r) mask of the text raters (fixed per prefill)."""
        embeds, vis_index = view.input_embeds, view.input_visual_index
        if embeds is None or vis_index is None:
            raise PruneBenchError("sparsevlm needs the LLM input embeddings in the LayerView (prunebench.engine provides them)")
        length = embeds.shape[1]
        last = vis_index.max(dim=1, keepdim=True).values
        rows = torch.arange(int(last.min()) + 1, length, device=embeds.device).expand(embeds.shape[0], -1)
        valid = rows > last
        vis = embeds.gather(1, vis_index[..., None].expand(-1, -1, embeds.shape[-1])).float()
        text = embeds.gather(1, rows[..., None].expand(-1, -1, embeds.shape[-1])).float()
        sim = (vis @ text.transpose(1, 2)).masked_fill(~valid[:, None, :], float("-inf"))
        p = torch.softmax(sim, dim=-1).mean(1)  # (B, r)
        mean = (p * valid).sum(1, keepdim=True) / valid.sum(1, keepdim=True)
        is_rater = valid & (p > mean)
        # text after the image is never pruned and every sequence ends at the same place: shift rows to now
        shift = view.hidden_states.shape[1] - length
        return (rows + shift).clamp(min=0), is_rater

    def relevance(self, view: LayerView) -> torch.Tensor:
        """(B, n) rel score of each visual token still present (mean over kept heads and raters)."""
        rows, is_rater = self.raters(view)
        attn = view.attention_to_visual(rows, heads="none")  # (B, H, r, n) fp32
        not_rater = ~is_rater[:, None, :, None]
        if self.version == "2.0":
            if self.rope_correction != "none":
                attn = attn / self.rope_attention(view, rows)[:, None]
            # zeroed, not multiplied by 0: a non-rater row whose R is 0 would turn inf * 0 into NaN (the original
            # corrects rater rows only)
            attn = attn.masked_fill(not_rater, 0.0)
            heads = min(self.heads, attn.shape[1])
            mass = attn.sum(dim=(2, 3))  # (B, H)
            top = mass.topk(heads, dim=1).indices
            attn = attn.gather(1, top[:, :, None, None].expand(-1, -1, *attn.shape[2:]))
        raters = is_rater.sum(1).clamp(min=1).to(attn.dtype)[:, None, None]
        per_head = attn.masked_fill(not_rater, 0.0).sum(2) / raters  # mean over raters
        return per_head.mean(1)

    def rope_attention(self, view: LayerView, rows: torch.Tensor) -> torch.Tensor:
        """R[i, j] = q1ᵢ·k1ⱼ · scaling for all-ones q/k rotated at the rows' and visual tokens' positions: (B, r, n)."""
        if view.position_embeddings is None or view.captured is None:
            raise PruneBenchError("sparsevlm v2.0 needs the RoPE tables and captured q/k of the scoring layer")
        cos, sin = (t.float() for t in view.position_embeddings)
        if cos.dim() != 3:
            raise PruneBenchError(
                f"sparsevlm v2.0's RoPE correction needs 1-D RoPE tables (B, L, d); this model gives {tuple(cos.shape)} "
                "(M-RoPE?); use rope_correction='none' or version='1.5'"
            )

        def at(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            return t.gather(1, idx[..., None].expand(-1, -1, t.shape[-1]))

        # rotate_half(ones) = (-1, .., +1, ..): the cross terms cancel, leaving Σ_d cos(Δp·θ_d)
        r = at(cos, rows) @ at(cos, view.visual_index).transpose(1, 2) + at(sin, rows) @ at(sin, view.visual_index).transpose(1, 2)
        r = r * view.captured.scaling
        if self.rope_correction == "clamp":
            r = r.clamp(min=self.rope_floor)
        return r

    def _recycle(self, view: LayerView, rel: torch.Tensor, kept: torch.Tensor, clusters: int) -> Selection:
        bsz, n = rel.shape
        pruned_mask = torch.ones(bsz, n, dtype=torch.bool, device=rel.device)
        pruned_mask.scatter_(1, kept, False)
        pruned = n - kept.shape[1]
        n1, c = self.clusters(pruned)
        if c != clusters:
            raise PruneBenchError(f"sparsevlm recycling: expected {clusters} clusters, the rule gives {c}")
        # top-n1 pruned tokens by rel (descending, as the code orders them)
        cand = rel.masked_fill(~pruned_mask, float("-inf")).topk(n1, dim=1).indices  # (B, n1) into visual
        hidden = view.hidden_states.gather(1, view.visual_index[..., None].expand(-1, -1, view.hidden_states.shape[-1]))
        feats = hidden.gather(1, cand[..., None].expand(-1, -1, hidden.shape[-1])).float()
        centres, assign = dpc_knn(feats, c, view.rand(n1, device=rel.device))
        sums = torch.zeros(bsz, c, feats.shape[-1], device=feats.device).scatter_add_(1, assign[..., None].expand(-1, -1, feats.shape[-1]), feats)
        counts = torch.zeros(bsz, c, device=feats.device).scatter_add_(1, assign, torch.ones_like(feats[..., 0]))
        merged = sums / (counts[..., None] + 1e-6)
        if self.recycling == "append":  # after the kept tokens, in centre order (the published code)
            return Selection(kept, append=merged.to(hidden.dtype))
        centre_index = cand.gather(1, centres)  # (B, c) into visual
        indices = torch.cat([kept, centre_index], dim=1)
        order = indices.argsort(dim=1)
        values = torch.cat([hidden.gather(1, kept[..., None].expand(-1, -1, hidden.shape[-1])), merged.to(hidden.dtype)], dim=1)
        replace = torch.cat([torch.zeros_like(kept, dtype=torch.bool), torch.ones_like(centre_index, dtype=torch.bool)], dim=1)
        return RecycledSelection(
            indices.gather(1, order),
            values=values.gather(1, order[..., None].expand(-1, -1, values.shape[-1])),
            replace=replace.gather(1, order),
        )


def _scale_to(shape: Sequence[float], spans: Sequence[int], free: float, n: int) -> list[int]:
    """Counts k_i = α·f_i·n (capped to [1, n], non-increasing) with Σ span_i·k_i ≈ ``free``."""
    capped = [False] * len(shape)
    for _ in range(len(shape) + 1):
        fixed = sum(s * (n if c else 0) for s, c in zip(spans, capped))
        weight = sum(s * f * n for s, f, c in zip(spans, shape, capped) if not c)
        alpha = (free - fixed) / weight if weight else 0.0
        new = [c or alpha * f * n > n for f, c in zip(shape, capped)]
        if new == capped:
            break
        capped = new
    counts = [n if c else max(1, round(alpha * f * n)) for f, c in zip(shape, capped)]
    # put the rounding residual on the last stage (largest span for the paper's layers)
    residual = free - sum(s * k for s, k in zip(spans, counts))
    counts[-1] = max(1, min(counts[-2] if len(counts) > 1 else n, counts[-1] + round(residual / spans[-1])))
    for i in range(1, len(counts)):
        counts[i] = min(counts[i], counts[i - 1])
    return counts
