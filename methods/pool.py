"""Average pooling of the patch grid to the budget: the control that keeps the layout and drops resolution."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from prunebench.core import PruneBenchError, Selection, UnsupportedModel, VisionStagePruner
from prunebench.registry import register_method
from prunebench.views import VisionView, unit_quotas

REDUCES = ("avg", "max")


def pooled_shape(count: int, rows: int, cols: int) -> list[int]:
    """Bins per pooled row for ``count`` bins on a ``rows`` x ``cols`` grid: the exact rectangle h x w = count
    (h <= rows, w <= cols) whose aspect is closest to the grid's (ties: fewer rows, so 192 of 24 x 24 is 12 x 16,
    128 is 8 x 16, 64 is 8 x 8); where no rectangle fits, h = round(sqrt(count * rows / cols)) rows (at least
    ceil(count / cols)) whose bin counts differ by at most one, the longer rows first."""
    if not 0 < count <= rows * cols:
        raise PruneBenchError(f"cannot pool a {rows}x{cols} grid to {count} tokens")
    fits = [(h, count // h) for h in range(1, rows + 1) if count % h == 0 and count // h <= cols]
    if fits:
        target = math.log(rows / cols)
        h, w = min(fits, key=lambda hw: (round(abs(math.log(hw[0] / hw[1]) - target), 9), hw[0]))  # rounded: exact ties
        return [w] * h
    h = min(rows, max(math.ceil(count / cols), round(math.sqrt(count * rows / cols))))
    return [count // h + (i < count % h) for i in range(h)]


def bin_weights(rows: int, cols: int, shape: list[int], device: torch.device) -> torch.Tensor:
    """(count, rows * cols) averaging weights of the pooled bins, raster order: band i covers the adaptive rows
    [floor(i R / h), ceil((i + 1) R / h)) and its w_i bins the adaptive columns likewise (``adaptive_avg_pool2d``'s
    windows, which overlap where the sizes do not divide)."""
    h = len(shape)
    band = torch.arange(h, device=device).repeat_interleave(torch.tensor(shape, device=device))
    width = torch.tensor(shape, device=device)[band]
    first = torch.cat([torch.zeros(1, dtype=torch.long, device=device), torch.tensor(shape, device=device).cumsum(0)[:-1]])
    column = torch.arange(len(band), device=device) - first[band]
    r0, r1 = (band * rows) // h, -((-(band + 1) * rows) // h)
    c0, c1 = (column * cols) // width, -((-(column + 1) * cols) // width)
    r, c = torch.arange(rows, device=device), torch.arange(cols, device=device)
    inside = ((r[None] >= r0[:, None]) & (r[None] < r1[:, None]))[:, :, None] & ((c[None] >= c0[:, None]) & (c[None] < c1[:, None]))[:, None, :]
    weights = inside.flatten(1).float()
    return weights / weights.sum(1, keepdim=True)


@register_method("pool")
@dataclass
class Pool(VisionStagePruner):
    """Average pooling of each image's / crop's / frame's patch grid to the budget, before the LLM: the control
    that 2026 token-pruning papers run next to random pruning (no author; the reference implementation is
    UniPruneBench's ``methods/Pool_PreLLM.py``, ``TianfanPeng/VLMUniPruneBench`` at f93768f, written for
    InternVL tiles, which pools post-projector tokens per tile with ``adaptive_avg_pool2d`` to s x s).

    Definition (every choice is a definition; report it with the results):
      1. each unit (the image; LLaVA-NeXT's crops; Video-LLaVA's frames) gets its share of the budget
         (:func:`unit_quotas`: equal shares for equal units, as the port pools every tile to the same size);
      2. the unit's patch grid is pooled to exactly its share: the exact rectangle closest to the grid's aspect
         (:func:`pooled_shape`: 192 -> 12 x 16, 128 -> 8 x 16, 64 -> 8 x 8, 32 -> 4 x 8 on 24 x 24), or, for a
         count no rectangle fits, bands of rows whose bin counts differ by one; bins are PyTorch's adaptive
         windows (``adaptive_avg_pool2d``; 24 -> 8 or 12 are exact 3 x 3 / 2 x 2 means, others overlap);
      3. the pooled tokens enter the LLM in raster order, unit after unit, renumbered (compact positions).
    ``reduce="max"`` max-pools instead (the port's other option).

    Deviations and refusals:
      * **pre-projector**: the pooled tokens are means of ViT features (layer -2), then projected; the port and
        LLaVA-OneVision's ``get_2dPool`` pool after the projector. prunebench's vision stage merges in the
        feature space (the LLaVA projector is a 2-layer MLP, so the two differ);
      * tokens that are not grid patches (Video-LLaVA's frame [CLS] tokens, which the stock HF model keeps) are
        not pooled and not kept: each frame's share goes to its pooled patches;
      * a unit whose patches do not fill a rectangle of its grid cannot be pooled as a grid; stock LLaVA-NeXT
        unpads sub-crops, which cuts whole rows/columns, so each crop's remaining patches are a rectangle and
        are pooled as such. Its newline tokens stay outside the budget as for every method, but pooled tokens are
        merged tokens, which the adapter places after the kept ones: with nothing kept, the LLM sees every row's
        newline first and then the pooled tokens. ``--layout fivecrop`` (no newlines) is the clean NeXT setting;
      * Qwen2.5-VL is refused (:class:`UnsupportedModel`): pooled tokens would need M-RoPE positions on a pooled
        grid, and a merged token there takes the position of the image's last token.
    """

    reduce: str = "avg"

    signals = ("ViT features (feature layer)", "patch grid per unit")
    paper = "average-pooling control (UniPruneBench Pool_PreLLM port)"
    citation = "peng2025uniprunebench"

    def __post_init__(self) -> None:
        if self.reduce not in REDUCES:
            raise PruneBenchError(f"pool reduce must be one of {REDUCES}, got {self.reduce!r}")

    def select_vision(self, view: VisionView, keep: int) -> Selection:
        if getattr(view.adapter, "mrope", False):
            raise UnsupportedModel("pool: pooled tokens have no M-RoPE position on this model (use downsample for Qwen2.5-VL)")
        quotas = unit_quotas(view, keep) or [keep]
        unit_of = view.unit_of if view.unit_of is not None else torch.zeros_like(view.features[..., 0], dtype=torch.long)
        coords = view.grid_coords()[0]  # the same layout for every sample of a batch (the engine groups by it)
        pooled = []
        for unit, quota in enumerate(quotas):
            if quota == 0:
                continue
            members = ((unit_of[0] == unit) & (coords[:, 0] >= 0)).nonzero().squeeze(1)
            rows, cols = coords[members, 0], coords[members, 1]
            r0, c0 = int(rows.min()), int(cols.min())
            height, width = int(rows.max()) - r0 + 1, int(cols.max()) - c0 + 1
            if height * width != members.numel():
                raise UnsupportedModel(f"pool: unit {unit}'s patches do not form a rectangle of its grid; use a layout without unpadding")
            if quota > height * width:
                raise PruneBenchError(f"pool: unit {unit} holds {height * width} patches, fewer than its share {quota}; use a smaller budget")
            raster = members[((rows - r0) * width + (cols - c0)).argsort()]  # the unit's patches in raster order
            feats = view.features[:, raster]  # (B, height * width, D)
            weights = bin_weights(height, width, pooled_shape(quota, height, width), feats.device)
            if self.reduce == "avg":
                pooled.append(torch.einsum("kn,bnd->bkd", weights.to(feats.dtype), feats))
            else:
                masked = feats[:, None].masked_fill(~(weights > 0)[None, :, :, None], float("-inf"))
                pooled.append(masked.amax(dim=2))
        empty = torch.zeros(view.batch_size, 0, dtype=torch.long, device=view.features.device)
        return Selection(empty, append=torch.cat(pooled, dim=1))
