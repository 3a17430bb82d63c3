"""VScan: windowed local plus global [CLS]-attention selection with nearest-neighbour merging before the LLM, then a
last-instruction-token cut in the middle of the LLM."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from prunebench.core import InfeasibleBudget, Plan, PlanContext, PruneBenchError, PruningMethod, Selection, solve_single_cut
from prunebench.registry import register_method
from prunebench.views import LayerView, VisionView, ranked, ranked_per_unit, stable_top_k, unit_quotas

REFERENCE_VIT_DEPTH, PAPER_LOCAL_LAYER = 24, 5  # CLIP ViT-L: [CLS] rows of layer index 5 (local) and the feature layer (global)
REFERENCE_DEPTH, PAPER_LLM_LAYER = 32, 16
WINDOWS = 4  # 4 x 4 windows


def window_ids(rows: int, cols: int, windows: int = WINDOWS) -> torch.Tensor:
    """(rows*cols,) window of each raster-order patch: a windows x windows split, leftover rows/columns folded
    into the last window row/column (24x24 -> 16 windows of 6x6)."""
    r = (torch.arange(rows) // max(1, rows // windows)).clamp(max=windows - 1)
    c = (torch.arange(cols) // max(1, cols // windows)).clamp(max=windows - 1)
    return (r[:, None] * windows + c[None, :]).flatten()


@register_method("vscan")
@dataclass
class VScan(PruningMethod):
    """VScan (Zhang et al., "VScan: Rethinking Visual Token Reduction for Efficient Large Vision-Language Models",
    TMLR 2026, arXiv 2505.22654; code github.com/Tencent/SelfEvolvingAgent @ a82450e, folder ``VScan/``:
    ``llava/model/llava_arch.py`` ``window_cls_selection`` / ``token_merging``, ``modeling_llama_x.py`` ``layer_prune``).

    Stage 1, after the vision tower, T1 tokens per image:
      1. local scan: the grid is cut into 4 x 4 windows; each window keeps its k = int(T1/2) // 16 tokens with the
         largest [CLS] attention of ViT layer ``local_layer`` (index 5 of CLIP ViT-L's 24, scaled to other depths);
      2. global scan: the remaining T1 - 16 k tokens with the largest [CLS] attention of the feature layer (the
         penultimate), the local picks excluded;
      3. merging (``merge``): every dropped token joins the kept token whose **projector output** is most
         cosine-similar; a kept token becomes the plain mean of itself and its members (post-projector).
    Stage 2, before decoder layer ``layer`` (16 of 32): the last instruction token's attention at that layer (its
    own norm, q/k and RoPE: ``LayerView.layer_attention``), mean over heads, top T2, positions renumbered as in
    PyramidDrop (the code's ``layer_prune``).

    Budget: the layer average (16·T1 + 16·T2)/32 with T2 = T1/3 (``ratio``): 64 -> 96/32 (the README's
    configuration), 128 -> 192/64, 192 -> 288/96 (the authors published only the 64 configuration); T2 is the
    nearest-integer solution given T1 (the harness's contract). ``final`` mode: T2 = B, T1 = min(N, B/ratio).

    Families: LLaVA-NeXT per crop (each crop its share of T1, its own windows and [CLS] maps, as the code);
    Video-LLaVA (no author code) per frame, a frame's own [CLS] token competing only in the global scan;
    Qwen2.5-VL (the authors' Qwen port reads received attention): the received attention of the first
    full-attention block (local; ``local_layer`` scaled: block 7 of 32) and of the last one (global), the merged
    2x2 grid as the window grid, kept tokens' M-RoPE positions kept, and the stage-2 score from the same rule
    as LLaVA (the port drops RoPE and the causal mask there; ``positions`` "original" via the per-model table).

    Deviations: the global scan fills the stage to exactly T1 (the code keeps 16·k + T1 - int(T1/2), fewer when
    int(T1/2) is not a multiple of 16); scores in fp32 from captured q/k instead of the eager ViT the code
    switches on; ties to the lower index. Merged kept tokens keep their own slot and position (the harness
    places them through the view's projected tokens, which the engine reuses for the kept rows).
    """

    ratio: float = 1 / 3
    layer: int | str = "auto"
    local_layer: int | str = "auto"
    merge: bool = True
    positions: str = "auto"

    stages = ("vision", "llm")
    signals = (
        "ViT [CLS] attention at two layers (received attention without [CLS])",
        "projector outputs (merging)",
        "attention of the last instruction token at the middle LLM layer",
    )
    position_policy = "compact"
    paper = "Zhang et al., TMLR 2026 (arXiv 2505.22654)"
    citation = "zhang2025vscan"

    def __post_init__(self) -> None:
        if not 0 < self.ratio <= 1:
            raise PruneBenchError(f"vscan ratio T2/T1 must lie in (0, 1], got {self.ratio}")
        if self.positions not in ("auto", "renumber", "original"):
            raise PruneBenchError(f"vscan positions must be auto, renumber or original, got {self.positions!r}")

    @property
    def llm_position_policy(self) -> str:
        return "original" if self.positions == "original" else "renumber"

    # -- budget -------------------------------------------------------------------------------------------
    def cut(self, num_layers: int) -> int:
        cut = round(PAPER_LLM_LAYER * num_layers / REFERENCE_DEPTH) if self.layer == "auto" else int(self.layer)
        if not 1 <= cut < num_layers:
            raise InfeasibleBudget(f"vscan layer={cut} must lie in 1..{num_layers - 1} for a {num_layers}-layer LLM")
        return cut

    def plan(self, budget: int, ctx: PlanContext) -> Plan:
        n, depth = ctx.num_visual, ctx.num_layers
        k = self.cut(depth)
        if ctx.mode == "final":
            t1 = min(n, round(budget / self.ratio))
            return ctx.plan(vision=t1, llm={k: min(budget, t1)})
        t1 = min(n, round(budget * depth / (k + (depth - k) * self.ratio)))
        t2 = solve_single_cut(budget, ctx, k, self.name, before=t1)
        return ctx.plan(vision=t1, llm={k: min(t2, t1)})

    # -- stage 1 ------------------------------------------------------------------------------------------
    def local_index(self, num_vision_layers: int) -> int:
        if self.local_layer != "auto":
            return int(self.local_layer) % num_vision_layers
        return round(PAPER_LOCAL_LAYER * num_vision_layers / REFERENCE_VIT_DEPTH)

    def vision_layers(self, num_vision_layers: int, feature_layer: int) -> tuple[int, ...]:
        return tuple(sorted({min(self.local_index(num_vision_layers), feature_layer), feature_layer}))

    def scores(self, view: VisionView) -> tuple[torch.Tensor, torch.Tensor]:
        """(local, global) per-token scores: [CLS] attention of the local layer and of the feature layer; received
        attention on towers without [CLS]."""
        local = min(self.local_index(view.num_vision_layers), view.feature_layer)
        if view.has_cls:
            return view.cls_attention(local), view.cls_attention()
        return view.received_attention(local), view.importance()

    def windows(self, view: VisionView) -> torch.Tensor:
        """(N,) the local-scan window of each candidate in its own unit's grid; 16 = no window (a frame's [CLS]
        token, which only the global scan can take). Crops and frames read each token's patch slot in its unit
        (``token_map``), so an unpadded AnyRes crop keeps the windows of its full grid, as the code selects
        before unpadding."""
        rows, cols = view.grid
        grid = window_ids(rows, cols).to(view.features.device)
        token_map = getattr(view, "token_map", None)
        if token_map is not None:
            slot = token_map[0] % view.unit_tokens - (1 if view.has_cls else 0)
        else:
            unit_of = view.unit_of[0] if view.unit_of is not None else torch.zeros(view.num_tokens, dtype=torch.long, device=grid.device)
            first = torch.searchsorted(unit_of, unit_of)  # units are contiguous: a token's index inside its unit
            slot = torch.arange(view.num_tokens, device=grid.device) - first
        if int(slot.max()) >= grid.numel():
            raise PruneBenchError(f"vscan: token slots up to {int(slot.max())} do not fit the {rows}x{cols} grid the view describes")
        return torch.where(slot >= 0, grid[slot.clamp(min=0)], torch.full_like(slot, WINDOWS * WINDOWS))

    def select_vision(self, view: VisionView, keep: int) -> Selection:
        local_scores, global_scores = self.scores(view)
        quotas = unit_quotas(view, keep) or [keep]
        unit_of = view.unit_of if view.unit_of is not None else torch.zeros_like(local_scores, dtype=torch.long)
        windows = self.windows(view)
        picked = []
        for unit, quota in enumerate(quotas):
            members = (unit_of[0] == unit).nonzero().squeeze(1)
            if quota:
                picked.append(members[self._select_unit(local_scores[:, members], global_scores[:, members], windows[members], quota)])
        keep_index = torch.cat(picked, dim=1).sort(dim=1).values
        if self.merge:
            view.__dict__["projected"] = self.merged(view.projected, keep_index, unit_of)
        return Selection(keep_index)

    @staticmethod
    def _select_unit(local: torch.Tensor, global_: torch.Tensor, windows: torch.Tensor, quota: int) -> torch.Tensor:
        bsz, count = local.shape
        groups = WINDOWS * WINDOWS + 1
        per_window = (quota // 2) // (WINDOWS * WINDOWS)
        chosen = torch.zeros(bsz, count, dtype=torch.bool, device=local.device)
        if per_window:
            for order in ranked_per_unit(local, windows.expand(bsz, -1), groups)[: WINDOWS * WINDOWS]:
                chosen.scatter_(1, order[:, :per_window], True)
        rest = quota - int(chosen[0].sum())
        if rest:
            chosen.scatter_(1, ranked(global_.masked_fill(chosen, float("-inf")))[:, :rest], True)
        index = torch.arange(count, device=local.device).expand(bsz, -1)
        return index[chosen].view(bsz, quota)

    @staticmethod
    def merged(projected: torch.Tensor, keep: torch.Tensor, unit_of: torch.Tensor) -> torch.Tensor:
        """The projector outputs with each kept token replaced by the mean of itself and the dropped tokens of its
        unit whose most cosine-similar kept token it is (``token_merging``)."""
        bsz, n, dim = projected.shape
        unit = F.normalize(projected.float(), dim=-1)
        kept = unit.gather(1, keep[..., None].expand(-1, -1, dim))
        sim = unit @ kept.transpose(1, 2)  # (B, N, k)
        same_unit = unit_of.gather(1, keep)[:, None, :] == unit_of[:, :, None]
        target = sim.masked_fill(~same_unit, float("-inf")).argmax(dim=-1)  # (B, N) slot in keep
        dropped = torch.ones(bsz, n, dtype=torch.bool, device=projected.device).scatter(1, keep, False)
        weight = dropped.to(projected.dtype)[..., None]
        sums = torch.zeros(bsz, keep.shape[1], dim, dtype=projected.dtype, device=projected.device)
        sums.scatter_add_(1, target[..., None].expand(-1, -1, dim), projected * weight)
        counts = torch.zeros(bsz, keep.shape[1], dtype=projected.dtype, device=projected.device).scatter_add_(1, target, weight[..., 0])
        own = projected.gather(1, keep[..., None].expand(-1, -1, dim))
        out = projected.clone()
        out.scatter_(1, keep[..., None].expand(-1, -1, dim), (own + sums) / (1 + counts[..., None]))
        return out

    # -- stage 2 ------------------------------------------------------------------------------------------
    def select_llm(self, view: LayerView, keep: int) -> Selection:
        scores = view.layer_attention(view.last_index).mean(1)[:, 0].gather(1, view.visual_index)
        return Selection(stable_top_k(scores, keep))
