"""VidCom²: frame-adaptive video token compression (unique frames get larger budgets, unique tokens are kept)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from prunebench.core import PruneBenchError, Selection, VisionStagePruner
from prunebench.methods.evs import frames_of
from prunebench.registry import register_method
from prunebench.views import VisionView

SCALES = (0.125, 0.25, 0.5, 1.0, 2.0)  # the released multi-bandwidth Gaussian kernel


def gaussian_similarity(squared: torch.Tensor, scales: tuple[float, ...] = SCALES) -> torch.Tensor:
    """sum_a exp(-d / (2a)) of squared distances ``d``: VidCom²'s multi-bandwidth Gaussian kernel."""
    return sum(torch.exp(-squared / (2.0 * a)) for a in scales)


def uniqueness(embeddings: torch.Tensor, frames: int, channel_ratio: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """VidCom²'s two similarities of ``embeddings`` (B, T * P, C), fp32: ``video`` (B, T, P) = G(token, video
    mean) and ``frame`` (B, T, P) = G(token, its frame's mean), on the unit-normalised lowest-variance
    ``channel_ratio`` of the channels (variance over all the video's tokens, biased; ties to the lower channel).
    Lower = more unique. ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2, so no (T, P, C) difference is materialised."""
    bsz, num, dim = embeddings.shape
    x = embeddings.float()
    variance = x.var(dim=1, unbiased=False)  # (B, C)
    channels = variance.sort(dim=-1, stable=True).indices[:, : max(int(dim * channel_ratio), 1)]
    x = F.normalize(x.gather(2, channels[:, None, :].expand(-1, num, -1)), dim=-1).view(bsz, frames, num // frames, -1)
    norm = x.pow(2).sum(-1)  # 1, or 0 for an all-zero token
    frame_mean = x.mean(dim=2)  # (B, T, C')
    video_mean = frame_mean.mean(dim=1)  # (B, C'): frames are of equal size
    to_video = norm - 2.0 * torch.einsum("btpc,bc->btp", x, video_mean) + video_mean.pow(2).sum(-1)[:, None, None]
    to_frame = norm - 2.0 * torch.einsum("btpc,btc->btp", x, frame_mean) + frame_mean.pow(2).sum(-1)[..., None]
    return gaussian_similarity(to_video.clamp(min=0)), gaussian_similarity(to_frame.clamp(min=0))


def frame_quotas(video_similarity: torch.Tensor, keep: int, temperature: float = 0.01) -> torch.Tensor:
    """(B, T) tokens each frame keeps, summing exactly to ``keep``. The released rule: frame score s_t = -mean_i
    G(token, video mean), p = softmax((s - max s) / temperature), scale_t = min(R (1 + p_t - mean p), 1) with R =
    keep / (T P); the exact shares scale_t * P are then rounded by largest remainder (ties to the earlier frame),
    and what the clamp at a whole frame removed goes, in the same order, to the frames with room left."""
    bsz, frames, per_frame = video_similarity.shape
    score = -video_similarity.double().mean(-1)
    p = torch.softmax((score - score.max(dim=-1, keepdim=True).values) / temperature, dim=-1)
    ratio = keep / (frames * per_frame)
    exact = (ratio * (1.0 + p - p.mean(dim=-1, keepdim=True))).clamp(max=1.0) * per_frame
    quotas = exact.floor().long().clamp(0, per_frame)
    remainder = exact - quotas
    # frame order for the leftover tokens: largest remainder first, the earlier frame on ties
    order = remainder.sort(dim=-1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(frames, device=order.device).expand(bsz, -1))
    deficit = keep - quotas.sum(-1, keepdim=True)
    while bool((deficit != 0).any()):  # rounds of +1 in remainder order; one round unless the clamp bit
        grow = deficit > 0  # (B, 1); a negative deficit (float rounding) takes tokens back in reverse order
        room = torch.where(grow, quotas < per_frame, quotas > 0)
        before = torch.where(grow[..., None], rank[:, None, :] <= rank[:, :, None], rank[:, None, :] >= rank[:, :, None])
        nth = (before & room[:, None, :]).sum(-1)  # 1-based place of frame t among the frames with room
        step = (room & (nth <= deficit.abs())).long()
        quotas = quotas + torch.where(grow, step, -step)
        deficit = keep - quotas.sum(-1, keepdim=True)
    return quotas


@register_method("vidcom2")
@dataclass
class VidCom2(VisionStagePruner):
    """VidCom² (Liu et al., "Video Compression Commander: Plug-and-Play Inference Acceleration for Video Large
    Language Models", EMNLP 2025, arXiv 2505.14454), training-free, after the projector (and the 2-D pooling),
    before the LLM; no attention, no text.

    Algorithm (``xuyang-liu16/VidCom2`` @ 944a17d, ``token_compressor/vidcom2/vidcom2.py``
    ``vidcom2_compression``; Qwen2.5-VL on branch ``qwen`` @ a85d485), budget = tokens entering the LLM:
      1. keep the ``channel_ratio`` (0.5) of the channels with the lowest variance over all the video's tokens and
         normalise every token on them;
      2. v = G(token, video mean), f = G(token, its frame's mean), G(x, c) = sum_a exp(-||x - c||^2 / 2a) over
         a in {1/8, 1/4, 1/2, 1, 2};
      3. frame uniqueness s_t = -mean v over the frame; p = softmax((s - max s) / ``temperature`` (0.01));
         frame budget scale_t = min(R (1 + p_t - mean p), 1) with R the average retention = keep / N;
      4. in each frame keep its quota of the tokens with the lowest v + f (distinct from the video *and* from
         their frame), ties to the lower index; all in original order; compact positions on LLaVA.

    Per-frame budgets: the original rounds each frame's count, k_t = max(round(scale_t * P), 1), so the total
    only approximates R * T * P (rounding and the clamp at a whole frame). prunebench's budget is exact, as in
    vLLM's port (``vllm/multimodal/video_prune/vidcom2.py`` @ 0f17ee0, which reconciles the count by score):
    here the shares scale_t * P are rounded by largest remainder (ties to the earlier frame) and any tokens the
    clamp removed go to frames with room, so the quotas sum to the budget (:func:`frame_quotas`). Deviations of
    that choice: a frame may get 0 tokens when the budget is below about two tokens per frame (the original's
    one-token floor would exceed the budget); fp32 throughout (the original: the model's dtype).

    Families: LLaVA-OneVision (the paper's model): the projected, pooled 14 x 14 tokens of each frame, the
    single trailing newline outside the budget (the original also appends it after the kept tokens).
    Qwen2.5-VL (the ``qwen`` branch): frames are temporal grids of two frames, tokens the merger's 2x2 units;
    survivors keep their M-RoPE ids of the unpruned prompt, as the branch slices ``get_rope_index``.
    Video-LLaVA (no code): each frame's 257 projector outputs, [CLS] included, by the same rule; compact
    positions. Images (no code; the paper is video-only): the per-image reading T = 1, where the frame
    allocation degenerates to R and the rule keeps the ``keep`` tokens of lowest v + f (= 2 G(token, image
    mean)); several crops of one image count as one frame. ``space="vision"`` scores the pre-projector features.
    """

    channel_ratio: float = 0.5
    temperature: float = 0.01
    space: str = "projected"

    signals = ("per-frame visual embeddings (Gaussian similarity to the video and frame means)",)
    paper = "Liu et al., EMNLP 2025 (arXiv 2505.14454)"
    citation = "liu2025vidcom2"
    display_name = "VidCom2"

    def __post_init__(self) -> None:
        if not 0.0 < self.channel_ratio <= 1.0:
            raise PruneBenchError(f"vidcom2 channel_ratio must lie in (0, 1], got {self.channel_ratio}")
        if self.temperature <= 0:
            raise PruneBenchError(f"vidcom2 temperature must be positive, got {self.temperature}")
        if self.space not in ("projected", "vision"):
            raise PruneBenchError(f"vidcom2 space must be 'projected' or 'vision', got {self.space!r}")

    def select_vision(self, view: VisionView, keep: int) -> Selection:
        frames = frames_of(view)[0] if getattr(view, "unit_kind", "image") == "frame" else 1
        embeddings = view.projected if self.space == "projected" else view.features
        video, frame = uniqueness(embeddings, frames, self.channel_ratio)
        quotas = frame_quotas(video, keep, self.temperature)  # (B, T)
        bsz, _, per_frame = video.shape
        order = (video + frame).sort(dim=-1, stable=True).indices  # per frame, most unique first
        rank = torch.empty_like(order).scatter_(2, order, torch.arange(per_frame, device=order.device).expand_as(order))
        kept = (rank < quotas[..., None]).flatten(1)  # (B, T * P), exactly `keep` per row
        return Selection(kept.nonzero()[:, 1].view(bsz, keep))
