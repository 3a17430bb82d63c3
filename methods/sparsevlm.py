"""SparseVLM: text-guided, training-free pruning of visual tokens inside the LLM at several layers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from prunebench.core import InfeasibleBudget, Plan, PlanContext, PruneBenchError, PruningMethod, Selection, ranked, solve_cuts, top_k
from prunebench.methods._sparsevlm import (
    PAPER_LAYERS,
    REFERENCE_DEPTH,
    REFERENCE_TOKENS,
    SCHEDULE_MODES,
    SCHEDULES,
    cluster_means,
    dpc_knn,
    in_slot,
    no_paper_schedule,
    paper_budgets,
    paper_counts,
    recycled_clusters,
    schedule_shape,
    served_budgets,
)
from prunebench.registry import register_method
from prunebench.views import LayerView

__all__ = ["SCHEDULES", "SparseVLM", "dpc_knn", "paper_budgets", "paper_counts", "recycled_clusters", "schedule_shape"]


@register_method("sparsevlm")
@dataclass
class SparseVLM(PruningMethod):
    """SparseVLM (Zhang et al., "SparseVLM: Visual Token Sparsification for Efficient VLM Inference", ICML 2025,
    arXiv 2410.04417; ``Gumpest/SparseVLMs``). ``version="2.0"`` (default) = "SparseVLM+" (main @26a5f48,
    ``USE_VERSION=2_0``); ``version="1.5"`` = the ICML branch (@8435974). v1 (rank-based counts, per-benchmark
    scale/bias) is not offered: its token count is data-dependent, which no fixed budget can express.

    Algorithm (both versions):
      1. text raters, once per prefill, from the LLM input embeddings E: S = V·Tᵀ between the visual tokens V
         and all tokens T after the image; p = softmax over T, mean over V; raters = {t : p_t > mean(p)};
      2. at each pruning layer ℓ in ``layers`` (0-based; its *output* is pruned, i.e. the harness's LLM stage
         before layer ℓ+1 reading layer ℓ's q/k): A = softmax attention of layer ℓ from the rater rows to the
         visual tokens, fp32; v2.0: A ← A / R with R[i, j] = q1ᵢ·k1ⱼ/√d for all-ones q1 = k1 rotated by RoPE at
         the tokens' positions (from the model's own cos/sin tables, M-RoPE included), then keep the ``heads``
         heads with the largest Σ A (14 in the code); v1.5: all heads; rel = mean over kept heads and raters;
         keep the top tokens in original order (equal rel: lower index);
      3. v1.5 recycling: of the pruned tokens, the n1 = int(0.3·pruned)+1 with the highest rel are clustered by
         density-peak k-NN (c = int(n1/10)+1 clusters, on the layer-ℓ output) and each cluster's mean becomes one
         token (merged tokens count as visual tokens and can be pruned later).
    No [CLS] is involved, so Qwen2.5-VL needs no replacement signal.

    Budget (``schedule``). The authors label their runs "192/128/96/64" and count each layer's tokens *after*
    its own pruning; prunebench counts what each layer *sees* (equal prefill compute), so their tuples measure
    more than their labels on LLaVA-1.5-7B (576 tokens, 32 layers, layers 2/6/15); v2.0 k@2,6,15 and average /
    final: 192 = 300,200,118 (206.75 / 118), 128 = 238,108,60 (144.13 / 60), 96 = 246,54,28 (113.94 / 28),
    64 = 66,34,20 (81.81 / 20); v1.5 (+ merged tokens): 192 = 300,200,110 (206.5 / 113), 128 = 303,110,36
    (145.41 / 39), 96 = 238,48,26 (114.09 / 27), 64 = 66,30,17 (82.25 / 18).
      * ``"paper"``: an authors' tuple verbatim, at a budget it meets by the harness's contract
        (:func:`prunebench.core.check_plan_meets_budget`): final mode its last count, average mode the integer
        within the rounding allowance (±0.25 here) of its average: 207, 144, 114, 82 for v2.0, only 114 and 82
        for v1.5; any other budget is infeasible, with a message naming these;
      * ``"scaled"``: the *shape* of the authors' schedule for the budget (per-layer fractions of N,
        interpolated between the labels) scaled by :func:`prunebench.core.solve_cuts` so that the plan meets
        B as prunebench counts it; any budget, model and depth. A stage whose scaled count is not below its
        input prunes nothing there, where the authors' k = min(., N_v - 1) always prunes one;
      * ``"auto"`` (default): the authors' tuple where it meets B exactly, otherwise ``scaled``.

    Deviations, each deliberate:
      * positions: v2.0 keeps the kept tokens' original (gapped) position ids; v1.5 renumbers every layer after
        a cut 0..n'-1 and a generated token takes each layer's own valid cache length as its position, as the
        published code does. M-RoPE (Qwen2.5-VL): a renumbered 1-D index has no meaning for (t, h, w) positions,
        so v1.5 there keeps original positions (``positions="original"``, per-model defaults) and recycles in slot;
      * recycling (``recycle``): ``"append"`` (v1.5 as published: after the kept visual tokens, needs
        renumbering), ``"inplace"`` (each merged token in its cluster centre's slot, original positions) or
        ``"none"`` (v2.0); ``"auto"`` picks append / inplace / none from version and positions;
      * fp32 scores from captured q/k and fp32 rater similarities (original: fp16); per-sample raters and scores
        (the originals read batch element 0); the clustering noise is seeded per sample;
      * Video-LLaVA: the image algorithm on the video's tokens; the authors' video branch (one cut at layer 1,
        k = rank of the rater attention, v1 merging; branch ``video``) is not implemented;
      * v2.0's division by R can divide by values near or below 0: ``rope_correction="divide"`` reproduces it,
        ``"clamp"`` divides by max(R, ``rope_floor``), ``"none"`` skips it.
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
            raise PruneBenchError(
                "sparsevlm recycle='append' places merged tokens by renumbering; use positions='renumber' (or recycle='inplace' with original positions)"
            )
        if self.schedule not in SCHEDULE_MODES:
            raise PruneBenchError(f"sparsevlm schedule must be one of {', '.join(SCHEDULE_MODES)}, got {self.schedule!r}")
        if self.rope_correction not in ("divide", "clamp", "none"):
            raise PruneBenchError(f"sparsevlm rope_correction must be 'divide', 'clamp' or 'none', got {self.rope_correction!r}")
        if isinstance(self.layers, str) and self.layers != "auto":  # "2,6,15" from --method-args arrives as a tuple
            raise PruneBenchError(f"sparsevlm layers must be 'auto' or 0-based layer indices such as 2,6,15, got {self.layers!r}")
        if self.layers != "auto":
            self.layers = tuple(int(x) for x in self.layers)
            if not self.layers or list(self.layers) != sorted(set(self.layers)) or self.layers[0] < 0:
                raise PruneBenchError(f"sparsevlm layers must be increasing 0-based layer indices, got {self.layers}")

    # -- budget -------------------------------------------------------------------------------------------
    @property
    def recycling(self) -> str:
        """ "append" (v1.5 as published), "inplace" (merged token in its centre's slot) or "none" (v2.0)."""
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
        cuts = self.cuts(ctx.num_layers)
        if self.schedule != "scaled":
            label = self.paper_label(budget, ctx)
            if label is not None:
                return ctx.plan(llm=dict(zip(cuts, paper_counts(self.version, label))))
            if self.schedule == "paper":
                raise InfeasibleBudget(no_paper_schedule(self.version, budget, ctx, self.pruning_layers(ctx.num_layers), self.paper_schedule_budgets(ctx)))
        shape = schedule_shape(self.version, budget * REFERENCE_TOKENS / ctx.num_visual, len(cuts))
        return ctx.plan(llm=dict(zip(cuts, solve_cuts(budget, ctx, cuts, shape, self.name))))

    def paper_label(self, budget: int, ctx: PlanContext) -> int | None:
        """The authors' budget label whose schedule meets ``budget`` under ``ctx.mode``; None if none does or
        this is not the model the schedules were written for."""
        labels = [label for label, served in self.paper_schedule_budgets(ctx).items() if served == budget]
        return labels[0] if labels else None

    def paper_schedule_budgets(self, ctx: PlanContext) -> dict[int, int | None]:
        """:func:`served_budgets` on LLaVA-1.5-7B's shape (576 tokens, 32 layers, the paper's layers), else empty."""
        if (ctx.num_visual, ctx.num_layers) != (REFERENCE_TOKENS, REFERENCE_DEPTH) or self.pruning_layers(ctx.num_layers) != PAPER_LAYERS:
            return {}
        return served_budgets(self.version, ctx, self.cuts(ctx.num_layers), self.name)

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
        """Rows (B, r) of the text after the image in the LLM's input (``view.text_queries(from_input=True)``) and
        a (B, r) mask of the raters among them, rated on the LLM input embeddings (fixed for the whole prefill)."""
        embeds, vis_index = view.input_embeds, view.input_visual_index
        if embeds is None or vis_index is None:
            raise PruneBenchError("sparsevlm needs the LLM input embeddings in the LayerView (prunebench.engine provides them)")
        rows, valid = view.text_queries(from_input=True)
        text_rows = rows - (view.hidden_states.shape[1] - embeds.shape[1])  # the same tokens in the input
        vis = embeds.gather(1, vis_index[..., None].expand(-1, -1, embeds.shape[-1])).float()
        text = embeds.gather(1, text_rows[..., None].expand(-1, -1, embeds.shape[-1])).float()
        sim = (vis @ text.transpose(1, 2)).masked_fill(~valid[:, None, :], float("-inf"))
        p = torch.softmax(sim, dim=-1).mean(1)  # (B, r)
        mean = (p * valid).sum(1, keepdim=True) / valid.sum(1, keepdim=True)
        return rows, valid & (p > mean)

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
        n1, c = self.clusters(rel.shape[1] - kept.shape[1])
        if c != clusters:
            raise PruneBenchError(f"sparsevlm recycling: expected {clusters} clusters, the rule gives {c}")
        cand = ranked(rel.scatter(1, kept, float("-inf")))[:, :n1]  # the n1 best pruned tokens, descending as in the code
        hidden = view.hidden_states.gather(1, view.visual_index[..., None].expand(-1, -1, view.hidden_states.shape[-1]))
        feats = hidden.gather(1, cand[..., None].expand(-1, -1, hidden.shape[-1])).float()
        centres, merged = cluster_means(feats, c, view.rand(n1, device=rel.device))
        if self.recycling == "append":  # after the kept tokens, in centre order (the published code)
            return Selection(kept, append=merged.to(hidden.dtype))
        return in_slot(hidden, kept, cand.gather(1, centres), merged.to(hidden.dtype))
