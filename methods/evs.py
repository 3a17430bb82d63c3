"""EVS: Efficient Video Sampling, keeping the video tokens that changed most since the previous frame."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from prunebench.core import PruneBenchError, Selection, UnsupportedModel, VisionStagePruner
from prunebench.registry import register_method
from prunebench.views import VisionView

FIRST_FRAME_DISSIMILARITY = 255.0  # the shipped code's marker: every first-frame token ranks above any 1 - cos (<= 2)


def frames_of(view: VisionView) -> tuple[int, int]:
    """(T, tokens per frame) of a video view whose frames are contiguous runs of equal length in ``unit_of``."""
    if getattr(view, "unit_kind", "image") != "frame" or view.unit_of is None:
        raise UnsupportedModel("this method is defined on videos (frames with a temporal axis); the input is an image")
    frames, tokens = view.num_units, view.num_tokens
    expected = torch.arange(tokens, device=view.unit_of.device) // max(tokens // max(frames, 1), 1)
    if tokens % frames or not bool((view.unit_of == expected).all()):
        raise PruneBenchError(
            f"the video view's {tokens} tokens are not {frames} contiguous frames of equal size; build unit_of as arange(N) // tokens_per_frame"
        )
    return frames, tokens // frames


def temporal_dissimilarity(embeddings: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, T * P) EVS's score: 1 - cos(token, the same position of the previous frame), fp32, from ``embeddings``
    (B, T * P, D) in frame-major raster order; every token of the first frame gets 255 (kept first)."""
    bsz, num, dim = embeddings.shape
    video = embeddings.float().view(bsz, frames, num // frames, dim)
    similarity = F.cosine_similarity(video[:, 1:], video[:, :-1], dim=-1)  # (B, T-1, P)
    first = similarity.new_full((bsz, 1, num // frames), FIRST_FRAME_DISSIMILARITY)
    return torch.cat([first, 1.0 - similarity], dim=1).flatten(1)


def retained_tokens_count(frames: int, tokens_per_frame: int, pruning_rate: float) -> int:
    """The shipped engine's token count for a pruning rate q: max(one frame, int(T * P * (1 - q)))."""
    if not 0.0 <= pruning_rate < 1.0:
        raise PruneBenchError(f"the EVS pruning rate q must lie in [0, 1), got {pruning_rate}")
    return max(tokens_per_frame, int(frames * tokens_per_frame * (1.0 - pruning_rate)))


def pruning_rate_for(budget: int, num_tokens: int) -> float:
    """A pruning rate q whose shipped token count is ``budget`` of ``num_tokens`` video tokens (budget >= one
    frame): nominally q = 1 - B / N; the count is int(N (1 - q)), which float rounding can put at B - 1 for
    q = 1 - B / N exactly, so the rate is taken half a token lower, q = 1 - (B + 1/2) / N (0 for B = N)."""
    if not 0 < budget <= num_tokens:
        raise PruneBenchError(f"an EVS budget must lie in [1, {num_tokens}] video tokens, got {budget}")
    return max(0.0, 1.0 - (budget + 0.5) / num_tokens)


@register_method("evs")
@dataclass
class EVS(VisionStagePruner):
    """EVS (Efficient Video Sampling, NVIDIA, "Efficient Video Sampling: Pruning Temporally Redundant Tokens for
    Faster VLM Inference", arXiv 2510.14624), training-free, after the vision encoder (and Qwen's 2x2 merger),
    before the LLM.

    There is no research repository; the public implementation is the serving engines' code, and this is a port
    of vLLM's (``vllm-project/vllm``, ``vllm/multimodal/evs.py`` @ 094f117 ``compute_retention_mask``,
    ``compute_retained_tokens_count``; the same rule in ``vllm/multimodal/video_prune/evs.py`` @ d750efb and
    SGLang's ``srt/multimodal/evs/evs_core.py``). For a video of T frames (temporal grids) of P tokens each:
      1. d[t, p] = 1 - cos(E[t, p], E[t-1, p]) for t >= 1: each token's dissimilarity to the token at the same
         spatial position of the previous frame, on the embeddings that enter the LLM (``space="projected"``);
      2. d[0, p] = 255: the whole first frame ranks first (it is the reference every later frame is compared to);
      3. a global stable descending sort of d over the whole video (ties to the lower raster index) and the
         first n_keep tokens kept, in their original (t, y, x) order, so frames keep different counts.

    Budget: the engine's knob is the pruning rate q with n_keep = max(P, int(T * P * (1 - q)))
    (:func:`retained_tokens_count`); a prunebench budget B of N video tokens is q = 1 - B / N
    (:func:`pruning_rate_for` gives a q the engine's count maps back to exactly B), and exactly B tokens are
    kept. Deviation: below one frame's worth (B < P) the engine would still keep P tokens; here the budget is
    exact, so B < P keeps the first B tokens of frame 0. The dissimilarity uses the engines' own op
    (``F.cosine_similarity``, fp32 here), so near-ties break as they do there.

    Positions: the engines keep every retained video token's original M-RoPE coordinates (t, y, x). On
    Qwen2.5-VL the adapter slices the model's own ``get_rope_index`` ids of the unpruned prompt to the
    survivors (original coordinates; text continues as HF numbers it, which differs from vLLM's recomputation
    once the temporal index exceeds the grid width). ``position_policy = "original"`` gives the 1-D RoPE
    families the same behaviour: survivors keep their unpruned positions, with gaps.

    Paper vs shipped code: a summary of the paper's first version describes the redundancy test in pixel space
    (per-patch L1 difference between consecutive frames, thresholded at a percentile); the engines use cosine
    dissimilarity of the embeddings with a global top-k, which is what this implements.

    Families (none is in the shipped code except Qwen2.5-VL-style models): Qwen2.5-VL, the shipped setting:
    frames are temporal grids of two frames, tokens the merged 2x2 units (merger output). LLaVA-OneVision:
    the projected, pooled 14 x 14 tokens of each frame (the newline after the last frame stays outside the
    budget). Video-LLaVA: the projector outputs of each frame's 257 tokens, [CLS] included, which Video-LLaVA
    feeds to its LLM: a frame's [CLS] is compared with the previous frame's [CLS] like any spatial position.
    ``space="vision"`` measures the dissimilarity on the pre-projector features instead (Qwen: the merger's
    input). Images are refused (``UnsupportedModel``): a single image has no previous frame, and the engine's
    one-frame floor would keep all of it.
    """

    space: str = "projected"

    position_policy = "original"
    signals = ("per-frame visual embeddings (cosine to the same position in the previous frame)",)
    paper = "NVIDIA, arXiv 2510.14624 (as shipped in vLLM)"
    citation = "nvidia2025evs"
    display_name = "EVS"

    def __post_init__(self) -> None:
        if self.space not in ("projected", "vision"):
            raise PruneBenchError(f"evs space must be 'projected' or 'vision', got {self.space!r}")

    def select_vision(self, view: VisionView, keep: int) -> Selection:
        frames, _ = frames_of(view)
        embeddings = view.projected if self.space == "projected" else view.features
        order = temporal_dissimilarity(embeddings, frames).sort(dim=-1, descending=True, stable=True).indices
        return Selection.sorted(order[:, :keep])
