"""PruMerge+: keep the [CLS]-attention outliers plus a uniform grid, merge every other token into its nearest
kept ones by key similarity, and add one token for everything pruned."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from prunebench.core import InfeasibleBudget, PruneBenchError, Selection, UnsupportedModel, VisionStagePruner
from prunebench.registry import register_method
from prunebench.views import VisionView, ranked, unit_quotas

VARIANTS = ("fixed", "adaptive")
ORDERS = ("original", "raster")


def iqr_outliers(attention: torch.Tensor) -> torch.Tensor:
    """(B,) count of entries above Q3 + 1.5 IQR per row (numpy's default linear quantiles, fp32)."""
    q1, q3 = torch.quantile(attention.float(), torch.tensor([0.25, 0.75], device=attention.device), dim=1)
    return (attention.float() > (q3 + 1.5 * (q3 - q1))[:, None]).sum(1)


@register_method("prumerge+")
@dataclass
class PruMergePlus(VisionStagePruner):
    """LLaVA-PruMerge+ (Shang, Cai, Xu, Lee, Yan, "LLaVA-PruMerge: Adaptive Token Reduction for Efficient Large
    Multimodal Models", ICCV 2025, arXiv 2403.15388), training-free, before the projector.

    Algorithm (``42Shawn/LLaVA-PruMerge`` at 097c041, ``clip_encoder.py`` ``token_prune_merge_advanced_plus``):
      1. a = the [CLS] row of the **last** ViT layer's attention computed as one head over the full width
         (``q_proj``/``k_proj`` of that layer on the feature-layer output, scaled by width**-0.5; not CLIP's 16
         heads), softmax over [CLS] + patches, patch columns (:meth:`VisionView.full_width_cls`);
      2. kept tokens: the top-attention patches plus a spatially uniform supplement (below);
      3. every kept token i absorbs its ``neighbours`` (32) most cosine-similar other tokens j (last-layer keys,
         kept and pruned alike, original features): x_i' = x_i + sum_j a_j x_j (raw attention weights; the
         normalising division is commented out in the original);
      4. one extra token = sum over the pruned tokens of a_j x_j, placed last;
      5. the LLM gets [x'_kept..., extra] in the original's order: attention-descending top tokens, then the
         uniform ones (``order="raster"``: ascending index instead), renumbered (compact positions).

    Variants (``variant``):
      * ``"fixed"`` (default): the fixed-budget variant that comparison tables at 192/128/64 use (the
        ``NOT_ADAPTIVE`` path of the copy in ``kinredon/SCOPE`` at 6bf7306, ``LLaVA/.../clip_encoder.py``):
        ceil(R/2) top-attention patches and R//2 uniform ones with R = budget - 1, plus the extra token. The
        original takes ``arange(s/2, N-1, s)`` for the uniform part and lets a position that is also a top token
        appear **twice**; here the uniform picks are spread evenly over the tokens not already kept (the
        midpoints of R//2 equal slices of them, ascending), so the budget holds R distinct tokens. A budget of
        2m + 1 is the original at rho = m/576 (193 / 129 / 65 for its "192 / 128 / 64" rows).
      * ``"adaptive"``: the authors' adaptive rule. k = #IQR outliers of a (> Q3 + 1.5 IQR), the top-k tokens
        plus ``arange(0, N-1, int(int(1/rho)/3))`` positions not already kept, plus the extra token: the count
        differs per image. The budget contract needs the count to equal the budget, so this variant keeps an
        image only when its real count equals the budget and otherwise raises :class:`InfeasibleBudget` naming
        each sample's real count (:meth:`adaptive_counts`), so a sweep reports the cell as infeasible instead
        of silently changing the count; run it one image at a time with ``--budget-mode final --budget <count>``.
        The IQR is per image (the original pools the whole batch's attention into one numpy call).

    Deviations: scores in fp32 from captured q/k (original: fp16 eager attention); ranking ties go to the lower
    index (stable sort; the original uses ``topk``); batches above 1 run every image on its own.
    Multi-unit inputs (no author code: the original's list branch for LLaVA-NeXT does not prune, and the paper's
    Video-LLaVA runs are undocumented): each crop / frame gets its share of the budget (:func:`unit_quotas`) and
    runs the algorithm on its own tokens with its own [CLS] row and its own extra token, as the third-party
    NeXT ports do per crop; every output token is a merged token, so on stock AnyRes the LLM sees the row newlines
    first and the merged tokens after them (``--layout fivecrop`` has no newlines). Video-LLaVA's frame [CLS]
    tokens are candidates there (the stock HF model keeps them), scored by their attention to themselves. Towers
    without [CLS] (Qwen2.5-VL) are refused: the rule is defined on the [CLS] row and no port defines a substitute.
    """

    variant: str = "fixed"
    neighbours: int = 32
    extra_token: bool = True
    order: str = "original"

    signals = ("ViT last-layer q/k (one full-width head, [CLS] row)", "ViT features (feature layer)")
    paper = "Shang et al., ICCV 2025 (arXiv 2403.15388)"
    citation = "shang2024prumerge"

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise PruneBenchError(f"prumerge+ variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.order not in ORDERS:
            raise PruneBenchError(f"prumerge+ order must be one of {ORDERS}, got {self.order!r}")
        if self.neighbours < 0:
            raise PruneBenchError(f"prumerge+ neighbours must be >= 0, got {self.neighbours}")

    def vision_layers(self, num_vision_layers: int, feature_layer: int) -> tuple[int, ...]:
        return (num_vision_layers - 1,)  # the last layer's q/k, computed on the feature layer's output

    def signals_of(self, view: VisionView) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N) full-width [CLS] attention and (B, N, W) unit-norm keys of the last ViT layer."""
        if not view.has_cls:
            raise UnsupportedModel("prumerge+ ranks by the ViT's [CLS] row and this tower has none (no port defines a substitute)")
        if view.feature_layer != view.num_vision_layers - 2:
            raise UnsupportedModel(f"prumerge+ reads the last ViT layer on the features of the one before; this model uses layer {view.feature_layer}")
        attention, keys = view.full_width_cls(view.num_vision_layers - 1)
        return attention, F.normalize(keys, dim=-1)

    def select_vision(self, view: VisionView, keep: int) -> Selection:
        attention, keys = self.signals_of(view)
        quotas = unit_quotas(view, keep) or [keep]
        unit_of = view.unit_of if view.unit_of is not None else torch.zeros_like(attention, dtype=torch.long)
        merged = []
        for unit, quota in enumerate(quotas):  # one crop / frame at a time, batched over the samples
            members = (unit_of[0] == unit).nonzero().squeeze(1)
            if quota:
                merged.append(self.merge_unit(view.features[:, members], attention[:, members], keys[:, members], quota))
        empty = torch.zeros(view.batch_size, 0, dtype=torch.long, device=attention.device)
        return Selection(empty, append=torch.cat(merged, dim=1))

    # -- one unit ------------------------------------------------------------------------------------------
    def kept(self, attention: torch.Tensor, quota: int) -> torch.Tensor:
        """(B, quota - extra) indices of the kept tokens in the original's order (top ones, then uniform ones)."""
        bsz, num = attention.shape
        extra = int(self.extra_token and quota > 1)
        if self.variant == "adaptive":
            return self._adaptive(attention, quota - extra)
        total = quota - extra
        top = ranked(attention)[:, : total - total // 2]
        if total // 2 == 0:
            return top
        rest_mask = torch.ones(bsz, num, dtype=torch.bool, device=attention.device).scatter_(1, top, False)
        rest = rest_mask.nonzero()[:, 1].view(bsz, num - top.shape[1])  # ascending
        picks = ((torch.arange(total // 2, device=attention.device) * 2 + 1) * rest.shape[1]) // (2 * (total // 2))
        return torch.cat([top, rest[:, picks]], dim=1)

    def adaptive_counts(self, attention: torch.Tensor) -> torch.Tensor:
        """(B,) tokens the authors' adaptive rule keeps per image, the extra token included."""
        return torch.tensor([self._adaptive_one(row).numel() for row in attention], device=attention.device) + int(self.extra_token)

    def _adaptive_one(self, row: torch.Tensor) -> torch.Tensor:
        num = row.numel()
        outliers = int(iqr_outliers(row[None])[0])
        if outliers == 0:
            raise InfeasibleBudget("prumerge+ (adaptive): no IQR outlier in the [CLS] attention, the original divides by zero")
        step = int(int(num / outliers) / 3)  # int(int(1 / rho) / 3) with rho = outliers / N
        if step == 0:
            raise InfeasibleBudget(f"prumerge+ (adaptive): {outliers} of {num} tokens are outliers, the original's arange step is 0")
        top = ranked(row[None])[0, :outliers]
        uniform = torch.arange(0, num - 1, step, device=row.device)
        return torch.cat([top, uniform[~torch.isin(uniform, top)]])

    def _adaptive(self, attention: torch.Tensor, count: int) -> torch.Tensor:
        rows = [self._adaptive_one(row) for row in attention]  # the rule is per image
        real = [r.numel() + int(self.extra_token) for r in rows]
        if any(r.numel() != count for r in rows):
            raise InfeasibleBudget(
                f"prumerge+ (adaptive) keeps {real} tokens on these images, the budget is {count + int(self.extra_token)}: "
                "the adaptive count is per image; run each image with --budget-mode final --budget <its count>, or variant=fixed"
            )
        return torch.stack(rows)

    def merge_unit(self, features: torch.Tensor, attention: torch.Tensor, keys: torch.Tensor, quota: int) -> torch.Tensor:
        """(B, quota, D) merged tokens of one unit: the kept tokens with their neighbours absorbed, then the extra."""
        bsz, num, dim = features.shape
        kept = self.kept(attention, quota)
        if self.order == "raster":
            kept = kept.sort(dim=1).values
        out = features.gather(1, kept[..., None].expand(-1, -1, dim))
        neighbours = min(self.neighbours, num - 1)
        if neighbours:
            similarity = keys.gather(1, kept[..., None].expand(-1, -1, keys.shape[-1])) @ keys.transpose(1, 2)  # (B, k, N)
            similarity.scatter_(2, kept[..., None], float("-inf"))  # every other token, kept or pruned
            near = similarity.topk(neighbours, dim=2).indices  # (B, k, n)
            weights = torch.zeros_like(similarity).scatter_(2, near, attention[:, None, :].expand_as(similarity).gather(2, near))
            out = out + (weights.to(features.dtype) @ features)  # row i: sum over its neighbours j of a_j x_j
        if self.extra_token and quota > 1:
            pruned = torch.ones(bsz, num, dtype=torch.bool, device=features.device).scatter_(1, kept, False)
            extra = (attention * pruned)[:, None, :].to(features.dtype) @ features
            out = torch.cat([out, extra], dim=1)
        return out
