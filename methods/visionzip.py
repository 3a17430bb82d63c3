"""VisionZip: dominant tokens by [CLS] attention, contextual tokens merged by key similarity."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from prunebench.bases import ScoredVisionPruner
from prunebench.core import PruneBenchError, Selection
from prunebench.registry import register_method
from prunebench.views import VisionView

# The paper's splits for LLaVA-1.5 (Table 8): 64 = 54 + 10, 128 = 108 + 20, 192 = 162 + 30.
CONTEXTUAL_SHARE = 10 / 64


@register_method("visionzip")
@dataclass
class VisionZip(ScoredVisionPruner):
    """VisionZip (Yang et al., "VisionZip: Longer is Better but Not Necessary in VLMs", CVPR 2025, arXiv
    2412.04467), training-free variant, acting before the projector (``dvlab-research/VisionZip`` @3151f6d,
    ``visionzip/utils.py``).

    Algorithm, at the ViT feature layer (hidden_states[-2]):
      1. dominant: [CLS] plus the ``dominant - 1`` patches with the largest [CLS] attention, **summed** over
         heads; [CLS] first, then the patches in raster order;
      2. contextual: of the remaining tokens (ascending), ``contextual`` targets at a uniform stride
         ``max(1, remaining // contextual)``; every other remaining token joins the target whose head-mean
         key is most cosine-similar; a contextual token = target + mean of its members (not a joint mean;
         ``merge="average"`` gives the joint mean instead);
      3. the LLM receives ``dominant + contextual`` tokens = the budget, renumbered (compact positions).

    Budget split: ``contextual = round(budget * 10/64)``, reproducing 54+10 / 108+20 / 162+30 and scaling
    between them; set ``dominant``/``contextual`` to fix them (they must then sum to the budget).
    Deviations: scores in fp32 from captured q/k instead of an fp16 eager softmax (near-ties may differ);
    equal scores keep the lower index (the original's ``topk`` leaves exact ties to the kernel).

    Qwen2.5-VL (no [CLS]): dominant tokens by ``view.importance()`` (received attention at the last
    full-attention ViT block, per 2x2 merge unit), as the LightCompress port (``ModelTC/LightCompress``
    @9701d03) does; nothing is prepended, so all ``dominant`` tokens are patches, and the contextual tokens
    enter after the kept ones at the image's last M-RoPE position (the port writes them at their target's).
    Video-LLaVA videos: the frames' [CLS] tokens are candidates (``cls_feature`` is None), nothing prepended.
    Multi-unit inputs (LLaVA-NeXT crops, video frames): the original runs the algorithm per crop with the same
    D/C for each; here each unit keeps its quota of the dominant patches, ranked by its own [CLS] attention.
    Deviation: only the base crop's [CLS] is prepended and one set of contextual tokens is merged over all
    units' remaining tokens (merged tokens can only sit before or after the kept ones, so the original's
    per-crop interleaving cannot be reproduced). The papers' setting is ``--layout fivecrop --budget-scope crop``.
    """

    dominant: int = 0  # 0 = derived from the budget
    contextual: int = -1  # -1 = derived from the budget
    merge: str = "target+mean"

    signals = ("ViT [CLS] attention (feature layer)", "ViT keys (feature layer)")
    paper = "Yang et al., CVPR 2025 (arXiv 2412.04467)"
    citation = "yang2025visionzip"

    def split(self, budget: int) -> tuple[int, int]:
        if self.dominant > 0 or self.contextual >= 0:
            contextual = self.contextual if self.contextual >= 0 else budget - self.dominant
            dominant = self.dominant if self.dominant > 0 else budget - contextual
            if dominant + contextual != budget or dominant < 1 or contextual < 0:
                raise PruneBenchError(f"visionzip dominant={dominant} + contextual={contextual} must equal the budget {budget}")
            return dominant, contextual
        contextual = round(budget * CONTEXTUAL_SHARE)
        return budget - contextual, contextual

    def score(self, view: VisionView) -> torch.Tensor:
        return view.cls_attention(heads="sum") if view.has_cls else view.importance()

    def select_vision(self, view: VisionView, keep: int) -> Selection:
        if self.merge not in ("target+mean", "average"):
            raise PruneBenchError(f"visionzip merge must be 'target+mean' or 'average', got {self.merge!r}")
        dominant, contextual = self.split(keep)
        prefix = view.cls_feature is not None  # [CLS] is one of the dominant tokens where it is not a candidate
        patches = dominant - 1 if prefix else dominant
        kept = self.keep_top(view, self.score(view), patches)  # each crop / frame its quota
        prepend = view.cls_feature[:, None] if prefix else None
        if contextual == 0:
            return Selection(kept, prepend=prepend)
        return Selection(kept, prepend=prepend, append=self._contextual(view, kept, contextual))

    def _contextual(self, view: VisionView, kept: torch.Tensor, count: int) -> torch.Tensor:
        bsz, total, _ = view.features.shape
        remaining = torch.ones(bsz, total, dtype=torch.bool, device=kept.device)
        remaining.scatter_(1, kept, False)
        rest = torch.arange(total, device=kept.device).expand(bsz, -1)[remaining].view(bsz, -1)  # ascending
        feats = view.features.gather(1, rest[..., None].expand(-1, -1, view.features.shape[-1]))
        keys = F.normalize(view.keys().float().gather(1, rest[..., None].expand(-1, -1, view.keys().shape[-1])), dim=-1)
        step = max(1, rest.shape[1] // count)
        is_target = torch.zeros(rest.shape[1], dtype=torch.bool, device=kept.device)
        is_target[torch.arange(count, device=kept.device) * step] = True
        targets, members = is_target.nonzero().squeeze(1), (~is_target).nonzero().squeeze(1)
        similarity = keys[:, members] @ keys[:, targets].transpose(1, 2)  # (B, members, targets)
        assign = similarity.argmax(dim=-1)
        sums = torch.zeros(bsz, count, feats.shape[-1], dtype=feats.dtype, device=feats.device)
        sums.scatter_add_(1, assign[..., None].expand(-1, -1, feats.shape[-1]), feats[:, members])
        counts = torch.zeros(bsz, count, dtype=feats.dtype, device=feats.device)
        counts.scatter_add_(1, assign, torch.ones_like(assign, dtype=feats.dtype))
        target_feats = feats[:, targets]
        if self.merge == "average":
            return (target_feats + sums) / (counts + 1)[..., None]
        return target_feats + sums / counts.clamp(min=1)[..., None]
