"""FastVID: dynamic temporal segmentation, then per-segment salient tokens plus density-peak context tokens that
absorb the pruned ones."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from prunebench.core import PruneBenchError, Selection, UnsupportedModel, VisionStagePruner
from prunebench.methods.evs import frames_of
from prunebench.registry import register_method
from prunebench.views import VisionView, unit_quotas


def segment_ids(global_features: torch.Tensor, cuts: int, tau: float) -> torch.Tensor:
    """(B, T) segment index of each frame (DySeg): s_t = cos(g_t, g_{t+1}); a segment ends after frame t when s_t
    is among the ``cuts - 1`` smallest (ties to the earlier frame) or s_t < ``tau``."""
    bsz, frames, _ = global_features.shape
    if frames == 1:
        return global_features.new_zeros(bsz, 1, dtype=torch.long)
    similarity = F.cosine_similarity(global_features[:, :-1], global_features[:, 1:], dim=-1)  # (B, T-1)
    smallest = similarity.sort(dim=-1, stable=True).indices[:, : max(cuts - 1, 0)]
    boundary = (similarity < tau).scatter(1, smallest, True)
    return torch.cat([boundary.new_zeros(bsz, 1), boundary], dim=1).long().cumsum(1)


def split_evenly(total: torch.Tensor, parts: torch.Tensor, place: torch.Tensor) -> torch.Tensor:
    """``total // parts``, plus one for the first ``total % parts`` places (``place`` 0-based)."""
    return total // parts + (place < total % parts).long()


def density_peak_scores(tokens: torch.Tensor, candidate: torch.Tensor, noise: torch.Tensor, k: int = 4) -> torch.Tensor:
    """DPC-KNN (density-peak clustering with k nearest neighbours, as these video codes run it) score rho * delta
    of each token of each frame, (B, T, P), among the frame's ``candidate`` tokens only (others: -inf): distances
    cdist / sqrt(C); rho = exp(-mean squared distance to the k nearest candidates, itself included, as the
    released top-k over the full distance matrix) + ``noise``; delta = distance to the nearest candidate of higher
    density, or the frame's largest candidate distance for the densest."""
    x = tokens.float()
    distance = torch.cdist(x, x) / x.shape[-1] ** 0.5  # (B, T, P, P)
    pair = candidate[..., :, None] & candidate[..., None, :]
    count = candidate.sum(-1, keepdim=True).clamp(min=1, max=k)  # neighbours available (<= k)
    nearest = distance.masked_fill(~pair, float("inf")).topk(min(k, x.shape[-2]), dim=-1, largest=False).values
    nearest = torch.where(torch.arange(nearest.shape[-1], device=x.device) < count[..., None], nearest, torch.zeros_like(nearest))
    rho = torch.exp(-(nearest**2).sum(-1) / count) + noise
    denser = (rho[..., None, :] > rho[..., :, None]) & pair
    widest = distance.masked_fill(~pair, 0.0).flatten(-2).amax(dim=-1, keepdim=True)  # (B, T, 1)
    delta = torch.where(denser.any(-1), distance.masked_fill(~denser, float("inf")).amin(dim=-1), widest)
    return (rho * delta).masked_fill(~candidate, float("-inf"))


def rank_within(scores: torch.Tensor) -> torch.Tensor:
    """Each entry's 0-based rank along the last axis by descending score (stable: ties to the lower index)."""
    order = scores.sort(dim=-1, descending=True, stable=True).indices
    return torch.empty_like(order).scatter_(-1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order))


@register_method("fastvid")
@dataclass
class FastVID(VisionStagePruner):
    """FastVID (Shen et al., "FastVID: Dynamic Density Pruning for Fast Video Large Language Models", NeurIPS
    2025, arXiv 2503.11187), training-free, on the pooled projector outputs before the first LLM layer.

    Algorithm (``LunarShen/FastVID`` @ a40a109, ``fastvid_llavavideo/.../language_model/modeling_qwen2.py``
    L893-1060, the LLaVA-OneVision layout), budget = tokens entering the LLM, spread over the T frames as equal
    per-frame quotas m_t (the original's int(P r); remainder to the first frames):
      1. DySeg: s_t = cos(g_t, g_{t+1}) of the frame global features; a segment ends after the ``cuts`` - 1
         (8 - 1) least similar transitions and after every s_t < ``tau`` (0.9);
      2. per segment, R = sum of its m_t; C = int(R ``context_ratio`` (d = 0.4)) context tokens, S = R - C salient;
      3. salient: S split evenly over the segment's frames (remainder to the first), each frame its top tokens
         by saliency a_t;
      4. context: anchor frames every ``anchor_stride`` (p = 4) frames counted from the segment's end; C split
         evenly over them (remainder to the earliest); each anchor keeps the DPC-KNN (k = 4) density peaks among
         its non-salient tokens (:func:`density_peak_scores`, per-sample seeded noise for the original's unseeded
         ``torch.rand`` tie-break);
      5. merge: each segment token that is neither salient nor this anchor's context token is assigned to the
         anchor's most cosine-similar context token; ctx' = w ctx + (1 - w) mean(assigned), w = max(1 / (n + 1),
         ``beta`` (0.6)), n the number assigned (a pruned token merges once into every anchor of its segment).

    Signals (the substitutes are documented choices): the original's g_t and a_t come from SigLIP's
    attention-pooling (MAP) head, which the LLaVA checkpoints drop (the authors load it from the original SigLIP
    checkpoint, which prunebench does not have). Here g_t = the mean of the frame's projected tokens, FastVID's
    own rule on Qwen2.5-VL (``fastvid_qwen25vl``), and a_t = ``view.importance()``: the attention each token
    receives at the tower's importance layer (LLaVA-OneVision, pooled like the features; Qwen2.5-VL, in place of
    its frame-mean-query row of the last block) or, on Video-LLaVA, its frame's [CLS] attention (the reference's
    port for LanguageBind). Similarities (DySeg, DPC-KNN, assignment) use the projected tokens; merged values are
    averaged in ``view.features`` (the vision stage's merged-token space; on LLaVA-OneVision the same tokens).

    Placement (``merge``): the original keeps the salient and the merged context tokens in original order with
    their original position ids. A vision-stage selection can keep candidates in place or add merged tokens, not
    overwrite a kept token's value, so ``merge=True`` (default) hands every chosen token over as a merged row, in
    original order, the context tokens with their merged values (the same sequence as the original's), with
    compact positions; M-RoPE models (Qwen2.5-VL) are refused then, as merged rows have no (t, y, x) position
    there. ``merge=False`` keeps the chosen tokens in place, unmerged, with each family's positions (original
    M-RoPE ids on Qwen2.5-VL): FastVID's selection without its merge step; the per-model defaults table sets it
    (with the authors' Qwen2.5-VL ``tau=0.84``) for the Qwen2.5-VL family.

    Exact count: the original's per-frame counts can exceed a frame at high retention (salient + context of an
    anchor); counts are capped per frame and any shortfall is filled with the most salient tokens not yet chosen,
    so exactly the budget is kept. Not implemented: the Qwen2.5-VL branch's ``DySeg_ignore`` (collapsing runs of
    near-identical frames) and its per-frame caps (its tau 0.84 is ``tau=0.84``). Images are refused
    (``UnsupportedModel``): FastVID defines no single-image reading (a one-frame video is one segment whose frame
    is its own anchor).
    """

    cuts: int = 8
    tau: float = 0.9
    context_ratio: float = 0.4
    anchor_stride: int = 4
    beta: float = 0.6
    knn: int = 4
    merge: bool = True

    signals = (
        "frame global feature (mean projected token)",
        "saliency (importance(): [CLS] or received attention)",
        "projected tokens (cosine, DPC-KNN density)",
    )
    paper = "Shen et al., NeurIPS 2025 (arXiv 2503.11187)"
    citation = "shen2025fastvid"
    display_name = "FastVID"

    def __post_init__(self) -> None:
        if self.cuts < 1 or self.anchor_stride < 1 or self.knn < 1:
            raise PruneBenchError("fastvid cuts, anchor_stride and knn must be positive integers")
        if not 0.0 <= self.context_ratio <= 1.0 or not 0.0 <= self.beta <= 1.0:
            raise PruneBenchError("fastvid context_ratio and beta must lie in [0, 1]")

    def vision_layers(self, num_vision_layers: int, feature_layer: int) -> tuple[int, ...]:
        return (feature_layer,)  # importance(): [CLS] attention there; towers without [CLS] add their importance layer

    def select_vision(self, view: VisionView, keep: int) -> Selection:
        frames, per_frame = frames_of(view)  # images: UnsupportedModel (FastVID defines no single-image reading)
        bsz, device = view.batch_size, view.features.device
        embeds = view.projected.float().view(bsz, frames, per_frame, -1)
        saliency = view.importance().float().view(bsz, frames, per_frame)
        quota = torch.tensor(unit_quotas(view, keep) or [keep], device=device).expand(bsz, -1)  # (B, T)

        # 1-2. segments and their salient / context totals
        segment = segment_ids(embeds.mean(2), self.cuts, self.tau)  # (B, T)
        same = segment[:, :, None] == segment[:, None, :]  # (B, T, T)
        total = (same * quota[:, None, :]).sum(-1)  # R of each frame's segment
        context_total = (total * self.context_ratio).long()
        length = same.sum(-1)
        place = (same & torch.ones(frames, frames, dtype=torch.bool, device=device).tril(-1)).sum(-1)  # index in segment
        # 3. salient tokens: S split evenly over the segment's frames
        salient_count = split_evenly(total - context_total, length, place).clamp(max=per_frame)
        salient = rank_within(saliency) < salient_count[..., None]  # (B, T, P)
        # 4. anchors: every p-th frame from the segment's end; C split evenly over them, earliest first
        from_end = length - 1 - place
        anchor = from_end % self.anchor_stride == 0
        anchors = (length - 1) // self.anchor_stride + 1
        anchor_place = anchors - 1 - from_end // self.anchor_stride
        context_count = torch.where(anchor, split_evenly(context_total, anchors, anchor_place), 0)
        context_count = torch.minimum(context_count, per_frame - salient_count)
        noise = view.rand(frames * per_frame, device).view(bsz, frames, per_frame) * 1e-6
        peaks = density_peak_scores(embeds, ~salient, noise, self.knn)
        context = (rank_within(peaks) < context_count[..., None]) & ~salient
        # exact count: what the caps removed goes to the most salient tokens not chosen yet
        chosen = (salient | context).flatten(1)
        short = keep - chosen.sum(-1, keepdim=True)
        extra = rank_within(saliency.flatten(1).masked_fill(chosen, float("-inf"))) < short
        salient = salient | extra.view_as(salient)
        if not self.merge:
            return Selection((salient | context).flatten(1).nonzero()[:, 1].view(bsz, keep))
        if getattr(view.adapter, "mrope", False):
            raise UnsupportedModel("fastvid: merged tokens have no M-RoPE position in prunebench's vision stage; use merge=False")

        # 5. merge into each anchor's context tokens, one anchor rank at a time (a segment has <= ceil(T / p) anchors)
        width = int(context.sum(-1).max()) if bool(context.any()) else 0
        features = view.features.float().view(bsz, frames, per_frame, -1)
        chosen = (salient | context).flatten(1).nonzero()[:, 1].view(bsz, keep)
        if width == 0:  # no context token: nothing to merge into
            values = features.flatten(1, 2).gather(1, chosen[..., None].expand(-1, -1, features.shape[-1]))
            return Selection(chosen[:, :0], append=values.to(view.features.dtype))
        slot_rank = rank_within(torch.where(context, -torch.arange(per_frame, device=device).float(), float("-inf")))
        slot_token = torch.where(context, slot_rank, width).clamp(max=width)  # context slot of each token in its frame
        slots = torch.full((bsz, frames, width + 1), per_frame, dtype=torch.long, device=device)
        slots.scatter_(2, slot_token, torch.arange(per_frame, device=device).expand(bsz, frames, -1))
        slots = slots[..., :width]  # (B, T, W): token index of each context slot, per_frame = empty
        valid_slot = slots < per_frame
        unit = F.normalize(embeds, dim=-1)
        padded_unit = torch.cat([unit, unit.new_zeros(bsz, frames, 1, unit.shape[-1])], dim=2)
        slot_unit = padded_unit.gather(2, slots[..., None].expand(-1, -1, -1, unit.shape[-1]))  # (B, T, W, D)
        sums = features.new_zeros(bsz, frames * width + 1, features.shape[-1])
        counts = features.new_zeros(bsz, frames * width + 1)
        source = ~salient  # and not the anchor's own context (checked per anchor below)
        frame_index = torch.arange(frames, device=device)
        for rank in range(int(anchors.max())):
            # each frame's rank-th anchor (earliest first) in its own segment, or -1
            is_target = anchor[:, None, :] & same & (anchor_place[:, None, :] == rank)  # (B, t, a)
            target = torch.where(is_target.any(-1), (is_target.long() * frame_index).sum(-1), -1)  # (B, T)
            has = target >= 0
            anchor_unit = slot_unit.gather(1, target.clamp(min=0)[..., None, None].expand(-1, -1, width, unit.shape[-1]))
            similarity = torch.einsum("btpd,btwd->btpw", unit, anchor_unit)
            anchor_valid = valid_slot.gather(1, target.clamp(min=0)[..., None].expand(-1, -1, width))
            similarity = similarity.masked_fill(~anchor_valid[:, :, None, :], float("-inf"))
            best = similarity.argmax(-1)  # (B, T, P): the first most similar slot
            merges = source & has[..., None] & anchor_valid.any(-1)[..., None]
            merges &= ~(context & (target == frame_index)[..., None])  # the anchor's own context tokens stay
            index = torch.where(merges, target.clamp(min=0)[..., None] * width + best, frames * width).flatten(1)
            sums.scatter_add_(1, index[..., None].expand(-1, -1, features.shape[-1]), features.flatten(1, 2))
            counts.scatter_add_(1, index, merges.flatten(1).float())
        sums, counts = sums[:, :-1].view(bsz, frames, width, -1), counts[:, :-1].view(bsz, frames, width)
        weight = torch.clamp(1.0 / (counts + 1.0), min=self.beta)[..., None]
        padded = torch.cat([features, features.new_zeros(bsz, frames, 1, features.shape[-1])], dim=2)
        centre = padded.gather(2, slots[..., None].expand(-1, -1, -1, features.shape[-1]))
        merged = torch.where(counts[..., None] > 0, weight * centre + (1 - weight) * sums / counts.clamp(min=1)[..., None], centre)
        # every chosen token in original order, the context tokens carrying their merged values
        values = torch.cat([features, features.new_zeros(bsz, frames, 1, features.shape[-1])], dim=2)
        values.scatter_(2, slots[..., None].expand(-1, -1, -1, features.shape[-1]), merged)
        values = values[:, :, :per_frame].flatten(1, 2).gather(1, chosen[..., None].expand(-1, -1, features.shape[-1]))
        return Selection(chosen[:, :0], append=values.to(view.features.dtype))
