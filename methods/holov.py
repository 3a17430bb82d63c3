"""HoloV: allocate the budget over contiguous chunks of the token sequence by a holistic (attention + feature
variance) score, then keep each chunk's quota of its most attended tokens."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prunebench.core import PruneBenchError, Selection, VisionStagePruner
from prunebench.registry import register_method
from prunebench.views import VisionView, ranked

RANKS = ("attention", "holistic")
EPS = 1e-6
ATTENTION_SCALE = 1000.0  # the code multiplies the attention by 1000 before mixing it with the variance


def chunk_bounds(num: int, chunks: int) -> list[tuple[int, int]]:
    """``chunks`` contiguous slices of ``num`` tokens, sizes num // chunks, one more for the first num % chunks."""
    sizes = [num // chunks + (c < num % chunks) for c in range(chunks)]
    starts = [sum(sizes[:c]) for c in range(chunks)]
    return [(s, s + n) for s, n in zip(starts, sizes) if n > 0]


def holistic_scores(features: torch.Tensor, attention: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """For one chunk, features (B, M, D) and attention (B, M): per-token holistic scores h (B, M) and the chunk
    score (B,). h_i = 1000 a_i + alpha * gamma * v_i, v_i = the variance of token i's cosine similarities to the
    chunk (self-similarity set to 0 and included), gamma = mean|1000 a| / (mean|v| + eps); a one-token chunk
    scores mean(a)."""
    size = features.shape[1]
    if size < 2:
        return attention.float(), attention.float().mean(1)
    unit = features.float() / (features.float().norm(dim=-1, keepdim=True) + EPS)
    similarity = unit @ unit.transpose(1, 2)
    similarity = similarity * (1 - torch.eye(size, device=features.device))
    mean = similarity.sum(-1, keepdim=True) / (size - 1)
    variance = ((similarity - mean) ** 2).sum(-1) / (size - 1)
    scaled = ATTENTION_SCALE * attention.float()
    gamma = scaled.abs().mean(1, keepdim=True) / (variance.abs().mean(1, keepdim=True) + EPS)
    holistic = scaled + alpha * gamma * variance
    return holistic, holistic.mean(1)


def allocate(weights: torch.Tensor, sizes: torch.Tensor, keep: int) -> torch.Tensor:
    """(B, C) per-chunk quotas: floor(w_c keep), the remainder +1 to the highest-w chunks (stable), then every
    chunk's overflow beyond its size handed on to the chunks with room, highest w first, so the quotas sum to
    ``keep`` (the released code drops the overflow and pads zero tokens instead)."""
    quota = torch.floor(weights * keep).long()
    order = ranked(weights)
    remainder = keep - quota.sum(1, keepdim=True)
    bonus = (torch.arange(weights.shape[1], device=weights.device)[None] < remainder).long()
    quota = quota.scatter_add(1, order, bonus)
    quota = torch.minimum(quota, sizes[None])
    leftover = keep - quota.sum(1, keepdim=True)
    room = (sizes[None] - quota).gather(1, order)
    before = room.cumsum(1) - room
    give = (leftover - before).clamp(min=0).minimum(room)
    return quota.scatter_add(1, order, give)


@register_method("holov")
@dataclass
class HoloV(VisionStagePruner):
    """HoloV ("Don't Just Chase 'Highlighted Tokens' in MLLMs: Revisiting Visual Holistic Context Retention",
    NeurIPS 2025, arXiv 2510.02912), training-free, after the projector, before the LLM.

    Algorithm as released (``obananas/HoloV`` at 1d2e65e, ``llava/model/utils.py`` ``HoloV``), ``keep`` = K:
      1. a = [CLS] attention of the feature ViT layer (``attentions[-2][:, :, 0, 1:]``), head mean, fp32;
         Z = the projector's outputs;
      2. the token sequence is cut into ``num_patches`` (16) **contiguous 1-D chunks** of the raster order (576 /
         16 = 36 tokens = 1.5 grid rows, not 2-D windows);
      3. chunk score = mean over its tokens of h_i = 1000 a_i + alpha * gamma * v_i (:func:`holistic_scores`,
         alpha = 0.09), w_c = score_c / (sum of scores + 1e-6);
      4. quota q_c = floor(w_c K), the remainder one each to the highest-w chunks (:func:`allocate`);
      5. each chunk keeps its q_c tokens of highest **attention** (the holistic score only allocates), or the
         whole chunk when q_c reaches its size; compact positions.

    Choices where the code, the paper and the budget contract disagree:
      * **overflow**: a quota above its chunk's size is lost in the code and the output is zero-padded to K
        with zero embeddings the LLM attends to. prunebench feeds K real tokens: the overflow goes to the
        chunks with room, highest w first, as the paper's allocation (Eq. 1-5) redistributes overflowing quota.
        With every quota within its chunk (the usual case at 64-192 of 576) both agree.
      * **order**: the code emits chunk order and, inside a chunk, descending attention; the paper
        re-arranges the kept tokens spatially. The LLM gets them in raster order here (the paper's order).
      * ``rank="holistic"`` ranks inside a chunk by h_i, as the paper describes (the code: attention only).
        The paper's attention temperature and context refetching (App. D) are not in the code and not offered.
      * fp32 attention from captured q/k (code: eager, fp32 head mean of fp16 probabilities); stable ranking.

    Other inputs: LLaVA-NeXT (code: ``llava_arch.py``) runs one selection over the whole concatenated
    sequence (base crop first; chunks straddle crop boundaries) with a global K, as here; the code drops the
    newline tokens, prunebench keeps them outside the budget. Video-LLaVA (no code): one selection over all
    frames. Qwen2.5-VL (the authors' ``qwen-model-HoloV``): a = the attention each merged token receives at
    the last ViT block, head mean over all queries, averaged over its 2x2 patches in raster order
    (``view.importance()``; the released code scores in the ViT's window order without undoing it, and with
    eager vision attention overwrites the scores with ones: both bugs are not reproduced), Z = the merger's
    output, and ``num_patches = max(1, int(1.778 N / K))`` (``num_patches=0``, the default, picks 16 on towers
    with [CLS] and this rule without); kept tokens keep their M-RoPE positions.
    """

    num_patches: int = 0  # 0 = the code's per-family choice: 16 (LLaVA), max(1, int(1.778 N / K)) (Qwen2.5-VL)
    alpha: float = 0.09
    rank: str = "attention"

    signals = ("ViT [CLS] attention (feature layer)", "projected visual tokens (cosine variance)")
    paper = "HoloV, NeurIPS 2025 (arXiv 2510.02912)"
    citation = "holov2025"

    def __post_init__(self) -> None:
        if self.rank not in RANKS:
            raise PruneBenchError(f"holov rank must be one of {RANKS} ('attention' = the released code), got {self.rank!r}")
        if self.num_patches < 0:
            raise PruneBenchError(f"holov num_patches must be >= 1 (0 = the code's per-family choice), got {self.num_patches}")

    def vision_layers(self, num_vision_layers: int, feature_layer: int) -> tuple[int, ...]:
        return (feature_layer,)

    def chunks_for(self, view: VisionView, keep: int) -> int:
        if self.num_patches:
            return self.num_patches
        return 16 if view.has_cls else max(1, int(1.778 * view.num_tokens / keep))

    def select_vision(self, view: VisionView, keep: int) -> Selection:
        attention = view.cls_attention(heads="mean") if view.has_cls else view.importance()
        features = view.projected
        bounds = chunk_bounds(view.num_tokens, self.chunks_for(view, keep))
        per_token, chunk_scores = zip(*(holistic_scores(features[:, s:e], attention[:, s:e], self.alpha) for s, e in bounds))
        scores = torch.stack(chunk_scores, dim=1)  # (B, C)
        weights = scores / (scores.sum(1, keepdim=True) + EPS)
        sizes = torch.tensor([e - s for s, e in bounds], device=attention.device)
        quota = allocate(weights, sizes, keep)
        ranking = attention.float() if self.rank == "attention" else torch.cat(per_token, dim=1)
        kept = torch.zeros_like(attention, dtype=torch.bool)
        for c, (s, e) in enumerate(bounds):  # one batched step per chunk
            order = ranked(ranking[:, s:e]) + s
            take = torch.arange(e - s, device=attention.device)[None] < quota[:, c : c + 1]
            kept.scatter_(1, order, take)
        return Selection(kept.nonzero()[:, 1].view(view.batch_size, keep))
