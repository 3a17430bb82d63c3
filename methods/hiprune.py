"""HiPrune: anchor tokens from a middle ViT layer, buffer tokens around them, register tokens from a deep layer."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prunebench.bases import ScoredVisionPruner
from prunebench.core import PruneBenchError, Selection
from prunebench.registry import register_method
from prunebench.views import VisionView, grid_positions, mark_neighbours

BUFFER_SHAPES = ("cross", "square", "row")
EDGES = ("clamp", "drop")
PAPER_OBJECT_LAYER, PAPER_VIT_DEPTH = 9, 24  # 1-based object layer l of CLIP ViT-L/14-336 (24 layers)
__all__ = ["HiPrune", "grid_positions", "mark_neighbours"]


@register_method("hiprune")
@dataclass
class HiPrune(ScoredVisionPruner):
    """HiPrune (Liu et al., "HiPrune: Training-Free Visual Token Pruning via Hierarchical Attention in Vision
    Encoders", arXiv 2508.00553, ACL 2026 Findings), acting on the ViT output, before the LLM.

    Algorithm (``Danielement321/HiPrune`` @6e83a12, ``llava_arch.py``), budget B = tokens entering the LLM:
      1. score of a patch at a ViT layer = attention it receives, mean over heads and all query rows ([CLS] row
         included, [CLS] key dropped): ``view.received_attention``, from the captured q/k;
      2. anchors: the ``round(B * alpha / 5)`` top patches at the object layer (the paper's l = 9 of CLIP-L's
         24, 0-based 8; ``object_layer=-1`` scales it to other depths as l = round(9 L / 24), 1-based);
      3. buffers: each anchor's neighbours a-1, a+1, a-c, a+c on the c-column grid, **clamped** to [0, N-1] as
         the code does (a-1/a+1 wrap across row ends); anchors ∪ buffers is unique;
      4. registers: the top ``B - |anchors ∪ buffers|`` other patches at the register layer (LLaVA's feature
         layer, the method's ``score``; the original subtracts 1 from anchors/buffers, the same set);
      5. keep all of them in original order; compact positions.

    Alternatives: ``edges="drop"`` follows the paper's Eq. (5) (out-of-range neighbours discarded);
    ``buffer="square"`` (8 neighbours) / ``"row"`` (a±1) are the ablation's shapes (Table 6c);
    ``register_layer`` is ``"feature"`` or a 0-based ViT layer. Where the scaled object layer is wrong, the
    per-model table (``prunebench/models/method_defaults.yaml``) names one: the tiny and toy ViTs, and
    Qwen2.5-VL, whose scaled layer (0-based 11) is a windowed block while the authors' Qwen port reads block
    16 (0-based 15, full attention); there ``"feature"`` is the last block (31), the port's register layer too.

    Ties: every ranking is a stable sort on fp32 scores (equal scores: lower index); the original's ``topk``
    on fp16 leaves them to the kernel. Towers without [CLS] (Qwen2.5-VL) need no replacement: received
    attention is HiPrune's own score (Table 6a), given per 2x2 merge unit, as the port does.
    Deviations: fp32 scores; the budget is per sample (the LLaVA code divides B by the encoder batch's image
    count); the grid width comes from the view instead of the hard-coded 24; windowed Qwen blocks attend within
    their windows (the port's FA2 path does not; blocks 15 and 31 are full-attention blocks, where they agree).

    Multi-unit inputs (crops, frames): the original selects each crop on its own with int(B / n_crops) tokens
    on its ``'spatial'`` layout (native AnyRes grid, no unpadding, no newlines), which is ``--layout spatial``
    here. Each unit keeps its quota (the remainder to the first units) and neighbours are found on the unit's
    own grid (one removed by AnyRes unpadding is dropped). Video-LLaVA's frame [CLS] tokens are candidates:
    they can be registers but never anchors, since they have no grid cell (no original covers video).
    """

    alpha: float = 0.1
    object_layer: int = -1  # -1 = the paper's CLIP-L layer scaled to the encoder's depth (8 of 24)
    register_layer: str = "feature"
    buffer: str = "cross"
    edges: str = "clamp"

    signals = ("ViT received attention (object layer)", "ViT received attention (register layer)")
    paper = "Liu et al., ACL 2026 Findings (arXiv 2508.00553)"
    citation = "liu2025hiprune"

    def __post_init__(self) -> None:
        if self.buffer not in BUFFER_SHAPES:
            raise PruneBenchError(f"hiprune buffer must be one of {BUFFER_SHAPES}, got {self.buffer!r}")
        if self.edges not in EDGES:
            raise PruneBenchError(f"hiprune edges must be 'clamp' (code) or 'drop' (paper Eq. 5), got {self.edges!r}")
        if self.alpha < 0:
            raise PruneBenchError(f"hiprune alpha must be >= 0, got {self.alpha}")
        self._register_index(24, 22)  # validates the string early

    def _object_index(self, num_vision_layers: int) -> int:
        if self.object_layer == -1:
            return max(1, round(PAPER_OBJECT_LAYER * num_vision_layers / PAPER_VIT_DEPTH)) - 1
        if not 0 <= self.object_layer < num_vision_layers:
            raise PruneBenchError(
                f"hiprune object_layer={self.object_layer} does not exist in a {num_vision_layers}-layer vision encoder; "
                f"set a middle layer for this model in prunebench/models/method_defaults.yaml or pass object_layer=N "
                f"(0-based; -1 scales the paper's l 9 of 24 for CLIP-L to the encoder's depth)"
            )
        return self.object_layer

    def _register_index(self, num_vision_layers: int, feature_layer: int) -> int:
        if self.register_layer == "feature":
            return feature_layer
        try:
            layer = int(self.register_layer)
        except ValueError:
            raise PruneBenchError(f"hiprune register_layer must be 'feature' or a 0-based ViT layer index, got {self.register_layer!r}") from None
        if not -num_vision_layers <= layer < num_vision_layers:
            raise PruneBenchError(f"hiprune register_layer={layer} does not exist in a {num_vision_layers}-layer vision encoder")
        return layer % num_vision_layers

    def vision_layers(self, num_vision_layers: int, feature_layer: int) -> tuple[int, ...]:
        return tuple(sorted({self._object_index(num_vision_layers), self._register_index(num_vision_layers, feature_layer)}))

    def num_anchors(self, keep: int) -> int:
        return round(keep * self.alpha / 5)

    def offsets(self, columns: int) -> list[int]:
        cross = [-1, 1] if self.buffer == "row" else [-1, 1, -columns, columns]
        return cross + ([-columns - 1, -columns + 1, columns - 1, columns + 1] if self.buffer == "square" else [])

    def score(self, view: VisionView) -> torch.Tensor:
        """Register-layer received attention (anchors and buffers are kept first, whatever their score)."""
        return view.received_attention(self._register_index(view.num_vision_layers, view.feature_layer))

    def select_vision(self, view: VisionView, keep: int) -> Selection:
        object_scores = view.received_attention(self._object_index(view.num_vision_layers))
        if view.num_units > 1 and view.unit_of is not None:  # each crop / frame on its own grid
            units, unit_of = view.num_units, view.unit_of
            patch, inverse, cells = grid_positions(view)
            object_scores = object_scores.masked_fill(patch < 0, float("-inf"))  # no grid cell, no buffer: no anchor
        else:
            units, cells = 1, view.num_tokens
            patch = inverse = torch.arange(cells, device=object_scores.device).expand(view.batch_size, -1)
            unit_of = torch.zeros_like(patch)
        ranking = self.rank_units(view, object_scores, keep)
        anchors = torch.cat([order[:, : self.num_anchors(quota)] for order, quota in ranking], dim=1)
        anchored = mark_neighbours(anchors, patch, inverse, unit_of, cells, self.offsets(view.grid[1]), clamp=self.edges == "clamp")
        per_unit = torch.zeros(view.batch_size, units, dtype=torch.long, device=anchored.device).scatter_add_(1, unit_of, anchored.long())
        for u, (_, quota) in enumerate(ranking):
            if bool((per_unit[:, u] > quota).any()):
                raise PruneBenchError(
                    f"hiprune: anchors and buffers hold {int(per_unit[:, u].max())} tokens, more than the budget {quota}; lower alpha ({self.alpha})"
                )
        # anchors and buffers first (they always fit), then the best register-layer tokens for the rest
        return Selection(self.keep_top(view, self.score(view).masked_fill(anchored, float("inf")), keep))
