"""FasterVLM: keep the patches the ViT's [CLS] token attends to most (VisPruner with important_ratio = 1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prunebench.bases import ScoredVisionPruner
from prunebench.registry import register_method
from prunebench.views import VisionView


@register_method("fastervlm")
@dataclass
class FasterVLM(ScoredVisionPruner):
    """FasterVLM (Zhang et al., "[CLS] Attention is All You Need for Training-Free Visual Token Pruning",
    arXiv 2412.01818 v1; ``Theia-4869/FasterVLM`` @f5d5f12, ``llava_arch.py``): VisPruner's special case with
    important_ratio = 1.

    Keep the ``keep`` patches with the largest [CLS] attention at the feature ViT layer (``attentions[-2][:,
    :, 0, 1:]``, mean over heads, not renormalised), in original order; compact positions.
    Deviations: fp32 scores from captured q/k instead of an fp16 eager softmax (near-ties may differ); the
    original's ``topk`` leaves exact ties to the kernel, here equal scores keep the lower index.
    Multi-unit inputs keep each unit's quota, ranked per unit, as FasterVLM's video branch (@eca4cd5) keeps the
    same count per frame and VisPruner per LLaVA-NeXT crop; Video-LLaVA's frame [CLS] tokens, which the stock
    HF model keeps as LLM tokens, are candidates (the original model drops them and scores patches only).
    Towers without [CLS] (Qwen2.5-VL; no original code): ``view.importance()``, the attention each merged
    token receives at the last full-attention ViT block (head-mean, over all queries and its 2x2 patches), as
    LightCompress's VisPruner port (``ModelTC/LightCompress`` @9701d03) uses in place of [CLS] attention.
    """

    signals = ("ViT [CLS] attention (feature layer)",)
    paper = "Zhang et al., arXiv 2412.01818 v1 (FasterVLM)"
    citation = "zhang2024fastervlm"

    def score(self, view: VisionView) -> torch.Tensor:
        return view.importance(heads="mean")  # [CLS] attention, or received attention without [CLS]
