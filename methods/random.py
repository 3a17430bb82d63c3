"""Random pruning: the control every pruning paper compares against."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prunebench.bases import ScoredVisionPruner
from prunebench.registry import register_method
from prunebench.views import VisionView


@register_method("random")
@dataclass
class RandomPruning(ScoredVisionPruner):
    """Keep a uniform random subset of the visual tokens, before the LLM, in original order.

    As FastV's φ_rand (K = 0; Chen et al., ECCV 2024, arXiv 2403.06764, Tables 1 and 4) and LightCompress
    ``random.py`` (``ModelTC/LightCompress`` @9701d03). Each sample draws from its own generator seeded by
    (seed, sample id), so a sample's kept set does not depend on the batch it is in. The originals keep
    FastV-style original position ids; pre-LLM LLaVA code renumbers. We renumber (``compact``) by default;
    ``position_policy="original"`` reproduces the FastV/LightCompress variant.

    On Qwen2.5-VL: no attention signal is read, so nothing replaces [CLS] attention; candidates are the merged
    (2x2) tokens and the kept ones keep their unpruned 3-D M-RoPE positions whatever ``position_policy`` says.
    On LLaVA-NeXT, AnyRes newline tokens are not candidates (always kept). Multi-unit inputs draw one subset
    over all their tokens (no per-crop quota), as the originals draw over the whole image span.
    """

    position_policy: str = "compact"

    capture = ()  # reads no attention
    per_unit = False
    signals = ("seeded uniform noise",)
    paper = "FastV φ_rand (Chen et al., ECCV 2024, arXiv 2403.06764)"
    citation = "chen2024fastv"

    def score(self, view: VisionView) -> torch.Tensor:
        return view.rand(view.num_tokens, device=view.features.device)
