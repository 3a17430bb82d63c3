"""SCOPE: saliency-weighted greedy coverage (facility location) of the visual tokens, before the projector."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from prunebench.core import PruneBenchError, Selection, UnsupportedModel, VisionStagePruner
from prunebench.registry import register_method
from prunebench.views import VisionView, unit_quotas

COMBINES = ("multi", "add")


def saliency_coverage(features: torch.Tensor, saliency: torch.Tensor, k: int, alpha: float = 1.0, combined: str = "multi") -> torch.Tensor:
    """(B, k) indices in pick order of SCOPE's greedy saliency-weighted facility location over ``features``
    (B, N, D) with weights ``saliency`` (B, N): k times pick argmax_i w_i * sum_j max(0, S_ij - cover_j) over the
    unpicked i (first index on ties), then cover = max(cover, S_i*); S = cosine similarity, cover starts at 0.
    ``combined="add"`` scores gain + w instead. One batched (B, N, N) step per pick."""
    unit = F.normalize(features.float(), dim=-1)
    similarity = unit @ unit.transpose(1, 2)  # (B, N, N), symmetric
    bsz, num, _ = similarity.shape
    weight = saliency.float() ** alpha
    cover = torch.zeros(bsz, num, device=similarity.device)
    picked = torch.zeros(bsz, num, dtype=torch.bool, device=similarity.device)
    order = torch.empty(bsz, k, dtype=torch.long, device=similarity.device)
    rows = torch.arange(bsz, device=similarity.device)
    for step in range(k):
        # sum_j max(0, S_ij - cover_j) = sum_j max(S_ij, cover_j) - sum_j cover_j: two passes over S instead of three
        gain = torch.maximum(similarity, cover[:, None, :]).sum(-1) - cover.sum(-1, keepdim=True)
        score = gain * weight if combined == "multi" else gain + weight
        choice = score.masked_fill(picked, float("-inf")).argmax(dim=1)  # the first maximal index
        order[:, step] = choice
        picked[rows, choice] = True
        cover = torch.maximum(cover, similarity[rows, choice])
    return order


@register_method("scope")
@dataclass
class SCOPE(VisionStagePruner):
    """SCOPE (Deng et al., "SCOPE: Saliency-Coverage Oriented Token Pruning for Efficient Multimodal LLMs",
    NeurIPS 2025, arXiv 2510.24214), training-free, inside the vision tower output, before the projector.

    Algorithm (``kinredon/SCOPE`` at 6bf7306, ``scope/clip_encoder.py`` ``SCOPE``), ``keep`` tokens per image:
      1. saliency w = ([CLS] attention of the feature ViT layer, ``attentions[-2][:, :, 0, 1:]``, **summed** over
         heads) ** ``alpha`` (1.0, the released default);
      2. S = cosine similarity of the feature-layer patch features (pre-projector);
      3. greedy facility location weighted by saliency (:func:`saliency_coverage`): each step picks the token
         whose coverage gain sum_j max(0, S_ij - cover_j), times its saliency (``combined="multi"``; ``"add"``
         adds it), is largest, then raises the coverage to that token's similarities;
      4. the picks enter the projector in ascending (raster) order; compact positions; nothing is merged.

    Budget: the released code reads the count from ``SUBSET_RATIO`` (a count, despite its name) and divides it
    by the vision tower's batch, which is right for LLaVA-NeXT's crops (K/5 per crop) and wrong for a batch of
    LLaVA-1.5 images (K/B each). Here every image gets its own ``keep``; multi-unit inputs (LLaVA-NeXT crops;
    Video-LLaVA frames, no code) give each unit its share (:func:`unit_quotas`) and run the greedy on the unit's
    own tokens, as the original per crop. Deviations: fp32 similarities and saliency from captured q/k
    (original: fp16, eager attention); the original's NeXT layout (no unpadding, no newlines) is
    ``--layout fivecrop``/``spatial``; on stock AnyRes the unpadded crops run the same rule on fewer tokens.
    Towers without [CLS] (Qwen2.5-VL) are refused: the released code covers the LLaVA family only and no port
    defines the saliency there.
    """

    alpha: float = 1.0
    combined: str = "multi"

    signals = ("ViT [CLS] attention (feature layer, head sum)", "ViT features (feature layer)")
    paper = "Deng et al., NeurIPS 2025 (arXiv 2510.24214)"
    citation = "deng2025scope"

    def __post_init__(self) -> None:
        if self.combined not in COMBINES:
            raise PruneBenchError(f"scope combined must be one of {COMBINES}, got {self.combined!r}")

    def vision_layers(self, num_vision_layers: int, feature_layer: int) -> tuple[int, ...]:
        return (feature_layer,)

    def select_vision(self, view: VisionView, keep: int) -> Selection:
        if not view.has_cls:
            raise UnsupportedModel("scope weights coverage by the ViT's [CLS] attention and this tower has none (no port defines a substitute)")
        saliency = view.cls_attention(heads="sum")
        quotas = unit_quotas(view, keep)
        if quotas is None:
            return Selection.sorted(saliency_coverage(view.features, saliency, keep, self.alpha, self.combined))
        parts = []
        for unit, quota in enumerate(quotas):  # one crop / frame at a time, batched over the samples
            members = (view.unit_of[0] == unit).nonzero().squeeze(1)
            if quota:
                picks = saliency_coverage(view.features[:, members], saliency[:, members], quota, self.alpha, self.combined)
                parts.append(members[picks])
        return Selection.sorted(torch.cat(parts, dim=1))
