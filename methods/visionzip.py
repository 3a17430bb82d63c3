"""VisionZip: dominant tokens by [CLS] attention, contextual tokens merged by key similarity."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from prunebench.core import PruneBenchError, Selection, VisionStagePruner, top_k
from prunebench.registry import register_method
from prunebench.views import VisionView, top_k_per_unit, unit_quotas

# The paper's splits for LLaVA-1.5 (Table 8): 64 = 54 + 10, 128 = 108 + 20, 192 = 162 + 30.
CONTEXTUAL_SHARE = 10 / 64


@register_method("visionzip")
@dataclass
class VisionZip(VisionStagePruner):
    """VisionZip (Yang et al., "VisionZip: Longer is Better but Not Necessary in VLMs", CVPR 2025;
    methods-1.md §4), training-free variant, acting before the projector.

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
    Deviation: scores in fp32 from captured q/k instead of an fp16 eager softmax (near-ties may differ).

    On Qwen2.5-VL (no [CLS]): dominant tokens are ranked by ``view.importance()``, the attention each merged
    token receives at the last full-attention ViT block (head-mean, all queries, averaged over its 2x2 merge
    unit, window order undone), as in the LightCompress port (methods-1.md §4.4); there is no [CLS] to prepend,
    so all ``dominant`` tokens are patches, and the merging metric is the keys of the feature block averaged per
    merge unit. The contextual tokens enter the LLM after the kept ones at the 3-D M-RoPE position of the
    image's last token (the port writes them at their target's position). On Video-LLaVA videos the frames'
    [CLS] tokens are candidates (``cls_feature`` is None): nothing is prepended either.

    Multi-unit inputs (LLaVA-NeXT crops, Video-LLaVA frames): the original runs the algorithm per crop, with
    the same D/C for each ([CLS] + D-1 patches + C contextual per crop, methods-1.md §4.4). Here each unit keeps
    its share of the dominant patches (:func:`unit_quotas`: equal shares for equal units), ranked by its own
    crop's [CLS] attention, as VisPruner/FasterVLM do per crop. Deviation: only the base crop's [CLS] is
    prepended and one set of contextual tokens is merged over all units' remaining tokens -- the view does
    not expose the sub-crops' [CLS] features, and merged tokens can only sit before or after the kept ones,
    so the per-crop [CLS] and contextual interleaving of the original cannot be reproduced. The papers'
    setting is ``--layout fivecrop --budget-scope crop``: 5 x 576 tokens, no unpadding, the budget per crop.
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

    def vision_layers(self, num_vision_layers: int, feature_layer: int) -> tuple[int, ...]:
        return (feature_layer,)

    def select_vision(self, view: VisionView, keep: int) -> Selection:
        if self.merge not in ("target+mean", "average"):
            raise PruneBenchError(f"visionzip merge must be 'target+mean' or 'average', got {self.merge!r}")
        dominant, contextual = self.split(keep)
        prefix = view.cls_feature is not None  # [CLS] is one of the dominant tokens where it is not a candidate
        patches = dominant - 1 if prefix else dominant
        scores = view.cls_attention(heads="sum") if view.has_cls else view.importance()
        quotas = unit_quotas(view, patches)
        if quotas is None:
            kept = top_k(scores, patches)
        else:  # each crop / frame its share, ranked by its own [CLS] attention
            kept = top_k_per_unit(scores, view.unit_of, view.num_units, quotas)
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
