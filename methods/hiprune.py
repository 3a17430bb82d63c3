"""HiPrune: anchor tokens from a middle ViT layer, buffer tokens around them, register tokens from a deep layer."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prunebench.core import PruneBenchError, Selection, VisionStagePruner
from prunebench.registry import register_method
from prunebench.views import VisionView, ranked, ranked_per_unit, stable_top_k, top_k_per_unit, unit_quotas

BUFFER_SHAPES = ("cross", "square", "row")
EDGES = ("clamp", "drop")
PAPER_OBJECT_LAYER, PAPER_VIT_DEPTH = 9, 24  # 1-based object layer l of CLIP ViT-L/14-336 (24 layers)


@register_method("hiprune")
@dataclass
class HiPrune(VisionStagePruner):
    """HiPrune (Liu et al., "HiPrune: Training-Free Visual Token Pruning via Hierarchical Attention in Vision
    Encoders", arXiv 2508.00553, ACL 2026 Findings; methods-2.md §2), acting on the ViT output, before the LLM.

    Algorithm (``Danielement321/HiPrune`` @6e83a12, ``llava_arch.py``), budget B = tokens entering the LLM:
      1. score of a patch at a ViT layer = attention it receives, mean over heads and over all query rows
         ([CLS] row included, [CLS] key dropped): ``view.received_attention``, computed in query chunks from
         the captured q/k, never as an eager attention pass;
      2. anchors: the ``round(B * alpha / 5)`` (Python round) top patches at the object layer (the paper's
         l = 9 of CLIP-L's 24 layers, 0-based 8; a "middle" layer; ``object_layer=-1`` scales it to other
         depths as l = round(9 L / 24), 1-based: 0-based 0 for a 3-layer ViT, 1 for 4 layers);
      3. buffers: each anchor's neighbours a-1, a+1, a-c, a+c on the c-column patch grid, **clamped** to
         [0, N-1] as the code does (so a-1/a+1 wrap across row ends, and an anchor in the first/last row adds
         token 0/N-1); anchors ∪ buffers is unique;
      4. registers: the top ``B - |anchors ∪ buffers|`` other patches at the register layer (LLaVA's feature
         layer, ``mm_vision_select_layer = -2``; the original subtracts 1 from the anchor/buffer scores so they
         cannot win again, which is the same set);
      5. keep all of them in original order; compact positions (LLaVA passes ``position_ids=None``).

    Selectable alternatives: ``edges="drop"`` follows the paper's Eq. (5), which discards out-of-range
    neighbours instead of clamping; ``buffer="square"`` (8 neighbours) / ``"row"`` (a±1) are the ablation's
    shapes (Table 6c). ``register_layer`` is ``"feature"`` (the original's LLaVA rule) or a 0-based ViT layer.
    ``object_layer`` is a 0-based ViT layer or -1 (scaled default). Where the scaled layer is wrong the
    per-model table (``prunebench/models/method_defaults.yaml``) names the layer: the tiny and toy ViTs, and
    Qwen2.5-VL, whose scaled layer round(9·32/24) = 12 (0-based 11) is a windowed block, while the authors' Qwen
    port reads block 16 (0-based 15, one of the full-attention blocks 7/15/23/31); there ``"feature"`` is the
    last block (31), the port's register layer too. (``vision_layers`` runs before the tower, so the method
    cannot read the full-attention blocks itself; the table entry is the deliberate per-model choice.)

    Ties: every ranking (anchors, registers, single image or per unit) is a stable sort on fp32 scores, so
    equal scores go to the lower index; the original's ``topk`` on fp16 leaves them to the kernel.

    Towers without [CLS] (Qwen2.5-VL) need no replacement signal: received attention is HiPrune's own score
    (Table 6a: its CLS-free "global" score is the default); on Qwen the adapter gives it per 2x2 merge unit
    (mean over its 4 patches, window order undone), as the port does, and kept tokens keep their M-RoPE
    positions (the adapter's rule for every method).
    Deviations: fp32 scores (original: fp16 means of eager attention); the budget is per sample (the LLaVA
    code divides B by the number of images in the encoder batch, so batch > 1 would shrink it, §2.7); the grid
    width comes from the view instead of the hard-coded 24; the Qwen port's FA2 path scores with unmasked
    attention over the whole packed sequence, here windowed blocks attend within their windows (the eager
    path's semantics; blocks 15 and 31 are full-attention blocks, where the two agree per image).

    Multi-unit inputs (LLaVA-NeXT crops, video frames): the original selects each crop on its own (anchors,
    buffers on that crop's 24x24 grid, registers) with int(B / n_crops) tokens, on its own LLaVA-NeXT layout
    (``'spatial'`` on the image's native AnyRes grid: no unpadding, no newlines, 3 to 5 crops, methods-2.md
    §2.4), which is ``--layout spatial`` here (``fivecrop`` always uses the 672x672 grid, 5 crops; the stock
    ``anyres`` layout unpads and keeps one newline per row outside the budget). Each unit keeps its share
    (``unit_quotas``: B / n_units, the remainder to the first units, so the total is exactly B) and neighbours
    are found on the unit's own grid (a neighbour removed by AnyRes unpadding is dropped). Video-LLaVA's
    frames keep their [CLS] token as an LLM token, so it is a candidate: it can be a register (by its received
    attention) but never an anchor, since it has no grid cell and hence no buffer (no original covers video).
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

    # -- layers ------------------------------------------------------------------------------------------
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
        layers = {self._object_index(num_vision_layers), self._register_index(num_vision_layers, feature_layer)}
        return tuple(sorted(layers))

    # -- selection ----------------------------------------------------------------------------------------
    def num_anchors(self, keep: int) -> int:
        return round(keep * self.alpha / 5)

    def offsets(self, columns: int) -> list[int]:
        if self.buffer == "row":
            return [-1, 1]
        cross = [-1, 1, -columns, columns]
        if self.buffer == "cross":
            return cross
        return cross + [-columns - 1, -columns + 1, columns - 1, columns + 1]

    def select_vision(self, view: VisionView, keep: int) -> Selection:
        object_scores = view.received_attention(self._object_index(view.num_vision_layers))
        register_scores = view.received_attention(self._register_index(view.num_vision_layers, view.feature_layer))
        quotas = unit_quotas(view, keep)
        if quotas is None:
            anchored = self.anchors_and_buffers(object_scores, keep, view.grid[1])
            self._check(anchored.sum(dim=1), keep)
            # anchors and buffers first (they always fit), then the best register-layer tokens for the rest
            return Selection(stable_top_k(register_scores.masked_fill(anchored, float("inf")), keep))
        # several crops / frames: each selects its own share, on its own grid, as the original does per crop
        units, unit_of = view.num_units, view.unit_of
        patch, inverse, cells = grid_positions(view)
        # a token without a grid cell (a video frame's [CLS]) has no neighbours: it cannot anchor a buffer
        ranked_objects = ranked_per_unit(object_scores.masked_fill(patch < 0, float("-inf")), unit_of, units)
        anchors = torch.cat([order[:, : self.num_anchors(quota)] for order, quota in zip(ranked_objects, quotas)], dim=1)
        anchored = self._mark(anchors, patch, inverse, unit_of, cells, view.grid[1])
        per_unit = torch.zeros(view.batch_size, units, dtype=torch.long, device=anchored.device)
        per_unit.scatter_add_(1, unit_of, anchored.long())
        for u, quota in enumerate(quotas):
            self._check(per_unit[:, u], quota)
        return Selection(top_k_per_unit(register_scores.masked_fill(anchored, float("inf")), unit_of, units, quotas))

    def _check(self, sizes: torch.Tensor, keep: int) -> None:
        if bool((sizes > keep).any()):
            raise PruneBenchError(
                f"hiprune: anchors and buffers hold {int(sizes.max())} tokens, more than the budget {keep}; lower alpha ({self.alpha})"
            )

    def anchors_and_buffers(self, object_scores: torch.Tensor, keep: int, columns: int) -> torch.Tensor:
        """(B, N) bool: the anchors (top object-layer scores) and their neighbours on a single raster grid."""
        bsz, num = object_scores.shape
        anchors = ranked(object_scores)[:, : min(self.num_anchors(keep), num)]  # (B, a)
        position = torch.arange(num, device=anchors.device).expand(bsz, -1)
        return self._mark(anchors, position, position, torch.zeros_like(position), num, columns)

    def _mark(self, anchors, patch, inverse, unit_of, cells: int, columns: int) -> torch.Tensor:
        """Anchors plus their buffer neighbours: ``patch`` (B, N) is each candidate's cell on its unit's grid of
        ``cells`` cells (-1: not a patch, e.g. a video frame's [CLS]); ``inverse`` (B, U * cells) maps a cell back
        to its candidate (-1: not a candidate, e.g. removed by AnyRes unpadding)."""
        bsz, num = patch.shape
        offsets = torch.tensor(self.offsets(columns), device=anchors.device)
        cell = patch.gather(1, anchors)
        neighbours = cell[..., None] + offsets  # (B, a, s)
        if self.edges == "clamp":  # the code: out-of-range neighbours become the first / last cell
            neighbours = neighbours.clamp(0, cells - 1)
            valid = torch.ones_like(neighbours, dtype=torch.bool)
        else:  # the paper's Eq. (5): out-of-range neighbours are dropped
            valid = (neighbours >= 0) & (neighbours < cells)
        valid &= (cell >= 0)[..., None]
        flat = unit_of.gather(1, anchors)[..., None] * cells + neighbours.clamp(0, cells - 1)
        candidate = inverse.gather(1, flat.reshape(bsz, -1)).view_as(neighbours)
        valid &= candidate >= 0
        # a dropped neighbour points at its own anchor, which is in the set anyway
        candidate = torch.where(valid, candidate, anchors[..., None])
        mask = torch.zeros(bsz, num, dtype=torch.bool, device=anchors.device)
        mask.scatter_(1, anchors, True)
        mask.scatter_(1, candidate.reshape(bsz, -1), True)
        return mask


def grid_positions(view: VisionView) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(patch (B, N), inverse (B, U * cells), cells) of a multi-unit view: each candidate's cell on its own
    unit's ``view.grid``, and the candidate at each (unit, cell).

    A view with a ``token_map`` (tower token of each candidate, ``unit_tokens`` per unit, [CLS] first where the
    tower has one) gives exact cells, also when AnyRes unpadding removed some; without one, a unit's candidates
    are taken to be its grid cells in raster order.
    """
    bsz, num = view.features.shape[:2]
    rows, cols = view.grid
    cells = rows * cols
    device = view.features.device
    unit_of = view.unit_of
    token_map = getattr(view, "token_map", None)
    if token_map is not None:
        tokens = int(view.unit_tokens)
        patch = token_map % tokens - (1 if view.has_cls else 0)
    else:
        onehot = torch.nn.functional.one_hot(unit_of, view.num_units)
        patch = (onehot.cumsum(dim=1) * onehot).sum(-1) - 1
    patch = torch.where(patch < cells, patch, torch.full_like(patch, -1))
    inverse = torch.full((bsz, view.num_units * cells + 1), -1, dtype=torch.long, device=device)
    slot = torch.where(patch >= 0, unit_of * cells + patch, torch.full_like(patch, view.num_units * cells))
    inverse.scatter_(1, slot, torch.arange(num, device=device).expand(bsz, -1))
    return patch, inverse[:, :-1], cells
