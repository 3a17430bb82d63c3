"""VisPruner: important tokens by [CLS] attention plus diverse tokens by iterative duplicate removal;
FasterVLM: its [CLS]-attention-only special case (important_ratio = 1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from prunebench.core import PruneBenchError, Selection, VisionStagePruner, top_k
from prunebench.registry import register_method
from prunebench.views import VisionView, ranked, ranked_per_unit, top_k_per_unit, unit_quotas

# The authors' README pairs each budget with an important ratio: 128 tokens -> 0.5 (64 + 64), 64 -> 0.75
# (48 + 16), LLaVA-NeXT "32 x 5 = 160" -> 0.5; the argparse default is 0.5. The ratios behind the paper's tables
# are unpublished (VisPruner issue #5), so only these points are known. Keyed by budget per 576 tokens.
IMPORTANT_RATIO_PER_576 = {64: 0.75}
DEFAULT_IMPORTANT_RATIO = 0.5
TOKENS_PER_CROP = 576


def cls_importance(view: VisionView, name: str) -> torch.Tensor:
    """(B, N) [CLS] -> patch attention at the feature layer, mean over heads, not renormalised after dropping
    the [CLS] -> [CLS] entry (``attentions[-2][:, :, 0, 1:].mean(1)`` in both originals), fp32.

    Towers without [CLS] (Qwen2.5-VL) have no such signal; there the view's ``importance()`` gives the attention
    each token receives at a full-attention block, which is what LightCompress's Qwen2.5-VL port of VisPruner
    uses (it is not the authors' code: they published none for Qwen).
    """
    if view.has_cls:
        return view.cls_attention(heads="mean")
    importance = getattr(view, "importance", None)
    if importance is None:
        raise PruneBenchError(
            f"{name} scores patches by the ViT's [CLS] attention and this vision tower has no [CLS] token; "
            "use a method built on received attention (e.g. hiprune) for this model"
        )
    return importance(heads="mean")


@register_method("vispruner")
@dataclass
class VisPruner(VisionStagePruner):
    """VisPruner (Zhang et al., "Beyond Text-Visual Attention: Exploiting Visual Cues for Effective Token
    Pruning in VLMs", ICCV 2025, arXiv 2412.01818 v2+; methods-1.md §3), acting between the ViT and the LLM.

    Algorithm (``Theia-4869/VisPruner`` @aefa01a, ``llava_arch.py``), budget T = tokens entering the LLM:
      1. a = [CLS] attention of the feature ViT layer (``attentions[-2]``), mean over heads;
         T_imp = int(T * important_ratio), T_div = T - T_imp;
      2. important = the T_imp patches with the largest a; the rest (still in descending-a order) is the
         residual;
      3. diverse tokens: while the residual holds more than T_div tokens, split it into its even (A) and odd
         (B) positions, score each A token by its largest cosine similarity to any B token (layer -2 features,
         before the projector), drop the ``min(step, R - T_div)`` most redundant A tokens, and rebuild the
         residual as [surviving A in descending-similarity order, B unchanged] (ToMe-style bipartite step);
      4. keep important ∪ residual in original raster order; positions renumbered (compact), as LLaVA does.

    ``important_ratio = 0`` (default) uses the authors' README pairing: 0.75 at 64 tokens per 576 (so 320 of
    2880), 0.5 at every other budget (the argparse default; README 128 and NeXT 160). Any value in (0, 1]
    fixes it. ``important_ratio = 1`` keeps important tokens only, which is FasterVLM (registered as
    ``fastervlm``; the same kept set up to ties, since FasterVLM uses ``topk`` and VisPruner ``argsort``).
    The original's r = 0 (diverse tokens only) is not offered, since 0 selects the README pairing.

    Choices where the original is buggy or nondeterministic:
      * odd residual length R: the original builds its index with width floor(R/2) - r although A holds
        ceil(R/2) - r survivors, so an odd R raises a shape error (every published budget keeps R even).
        ``odd_residual="ceil"`` (default) keeps all ceil(R/2) - r survivors, identical to the original for
        even R; ``"bump"`` is LightCompress's workaround (T_imp + 1 when N - T_imp is odd);
      * the original ranks with an unstable ``argsort`` on fp16 head-means, so ties are kernel-defined; here
        every sort is stable (ties broken by lower position) on fp32 scores from captured q/k;
      * cosine similarities in fp32 (original: fp16), computed once over the residual; each round takes the
        max over B's columns of A's rows of that matrix (same values as the original's per-round matmul).
    Multi-unit inputs (``view.num_units > 1``): the original prunes each LLaVA-NeXT crop independently with
    the same T and r, so each unit keeps its share of the budget (:func:`unit_quotas`: 64 per crop for 320 of
    2880) and runs steps 1-4 on its own tokens. Video-LLaVA videos: the stock HF model keeps every frame's
    [CLS] as an LLM token, so the 8 frame [CLS] tokens are candidates here, scored by their attention to
    themselves, which usually ranks them among the important tokens; FasterVLM's video branch scores patches
    only (``attentions[-2][..., 0, 1:]``, 8 x 256), because the original model drops them.

    Towers without [CLS] (Qwen2.5-VL; the authors published no Qwen code): the important tokens are ranked by
    ``view.importance()``, the attention each merged token *receives* at the last full-attention ViT block
    (head-mean, averaged over all queries and over its 2x2 patches), which is what LightCompress's port uses
    in place of [CLS] attention. The diverse step runs on ``similarity="features"`` (default), i.e.
    ``view.features``: the feature-layer features on LLaVA, the merger's input (four ViT outputs after
    ``ln_q``, concatenated) on Qwen; LightCompress's port runs it on the post-merger LLM embeddings, which
    ``similarity="projected"`` selects (on LLaVA that is the projector's output instead of layer -2).
    """

    important_ratio: float = 0.0  # 0 = the README's per-budget choice (see IMPORTANT_RATIO_PER_576)
    step: int = 8  # tokens removed per round at most (the original's constant 8)
    odd_residual: str = "ceil"
    similarity: str = "features"  # "features" (the original, layer -2) or "projected" (LightCompress's Qwen port)

    signals = ("ViT [CLS] attention (feature layer)", "ViT features (feature layer)")
    paper = "Zhang et al., ICCV 2025 (arXiv 2412.01818 v2)"
    citation = "zhang2025vispruner"

    def __post_init__(self) -> None:
        if not 0.0 <= self.important_ratio <= 1.0:
            raise PruneBenchError(f"vispruner important_ratio must lie in (0, 1] (0 = per-budget default), got {self.important_ratio}")
        if self.step < 1:
            raise PruneBenchError(f"vispruner step must be >= 1, got {self.step}")
        if self.odd_residual not in ("ceil", "bump"):
            raise PruneBenchError(f"vispruner odd_residual must be 'ceil' or 'bump' (LightCompress), got {self.odd_residual!r}")
        if self.similarity not in ("features", "projected"):
            raise PruneBenchError(f"vispruner similarity must be 'features' or 'projected' (LightCompress's Qwen port), got {self.similarity!r}")

    def ratio_for(self, keep: int, num_tokens: int) -> float:
        if self.important_ratio > 0:
            return self.important_ratio
        per_576 = keep * TOKENS_PER_CROP / num_tokens
        return IMPORTANT_RATIO_PER_576.get(per_576, DEFAULT_IMPORTANT_RATIO) if per_576.is_integer() else DEFAULT_IMPORTANT_RATIO

    def split(self, keep: int, num_tokens: int) -> tuple[int, int]:
        """(important, diverse) token counts for a budget of ``keep`` of ``num_tokens``."""
        important = int(keep * self.ratio_for(keep, num_tokens))
        if self.odd_residual == "bump" and important < keep and (num_tokens - important) % 2:
            important += 1
        return important, keep - important

    def vision_layers(self, num_vision_layers: int, feature_layer: int) -> tuple[int, ...]:
        return (feature_layer,)

    def select_vision(self, view: VisionView, keep: int) -> Selection:
        scores = cls_importance(view, self.name)
        quotas = unit_quotas(view, keep)
        if quotas is None:
            groups = [(ranked(scores), keep)]
        else:
            groups = list(zip(ranked_per_unit(scores, view.unit_of, view.num_units), quotas))
        features = view.projected if self.similarity == "projected" else view.features
        parts = []
        for order, quota in groups:  # one unit (crop / frame) at a time, as the original does per crop
            important, diverse = self.split(quota, order.shape[1])
            parts.append(order[:, :important])
            if diverse:
                parts.append(remove_duplicates(features, order[:, important:], diverse, self.step))
        return Selection.sorted(torch.cat(parts, dim=1))


def remove_duplicates(features: torch.Tensor, residual: torch.Tensor, target: int, step: int = 8) -> torch.Tensor:
    """VisPruner's diverse-token loop: shrink ``residual`` (B, R) to ``target`` tokens, in its final order.

    Each round splits the current list into even (A) and odd (B) positions, scores every A token by its
    largest cosine similarity to a B token, drops the ``min(step, R - target)`` highest-scoring A tokens and
    continues on [surviving A by descending score (stable), B]. Every row of a batch has the same length at
    every round, so the rounds run batched. The similarities are computed once; a round copies A's rows of that
    matrix (one ``index_select`` over the batch-flattened matrix) and takes their maximum over B's columns (one
    ``gather``): the same values as the original's per-round matmul, so the same scores.
    """
    bsz, start = residual.shape
    feats = F.normalize(features.float().gather(1, residual[..., None].expand(-1, -1, features.shape[-1])), dim=-1)
    similarity = (feats @ feats.transpose(1, 2)).reshape(bsz * start, start)  # row b * start + i: token i of row b
    current = torch.arange(start, device=residual.device).expand(bsz, -1)
    row_offset = (torch.arange(bsz, device=residual.device) * start)[:, None]
    while current.shape[1] > target:
        drop = min(step, current.shape[1] - target)
        a, b = current[:, 0::2], current[:, 1::2]
        rows = similarity.index_select(0, (a + row_offset).reshape(-1)).view(bsz, a.shape[1], start)
        redundancy = rows.gather(2, b[:, None, :].expand(-1, a.shape[1], -1)).amax(dim=-1)  # max over B's columns
        by_redundancy = ranked(redundancy)
        current = torch.cat([a.gather(1, by_redundancy)[:, drop:], b], dim=1)
    return residual.gather(1, current)


@register_method("fastervlm")
@dataclass
class FasterVLM(VisionStagePruner):
    """FasterVLM (Zhang et al., "[CLS] Attention is All You Need for Training-Free Visual Token Pruning",
    arXiv 2412.01818 v1; methods-1.md §3): VisPruner's special case with important_ratio = 1.

    Keep the ``keep`` patches with the largest [CLS] attention at the feature ViT layer (mean over heads, not
    renormalised), by ``topk`` as its code does, in original order; compact positions. VisPruner with
    ``important_ratio=1`` keeps the same set up to ties (it ranks with a stable sort instead of topk).
    Deviation: fp32 scores from captured q/k instead of an fp16 eager softmax (near-ties may differ).
    Multi-unit inputs keep each unit's share of the budget (:func:`unit_quotas`, ranked per unit by the stable
    sort, so ties there go to the lower index where one image leaves them to ``topk``), as FasterVLM's video branch
    keeps the same count per frame and VisPruner per LLaVA-NeXT crop (Video-LLaVA's frame [CLS] tokens are
    candidates, as for VisPruner above). Towers without [CLS] (Qwen2.5-VL; no
    original code): ranked by ``view.importance()``, the attention each merged token receives at the last
    full-attention ViT block (head-mean, over all queries and its 2x2 patches), as LightCompress's VisPruner
    port does in place of [CLS] attention.
    """

    signals = ("ViT [CLS] attention (feature layer)",)
    paper = "Zhang et al., arXiv 2412.01818 v1 (FasterVLM)"
    citation = "zhang2024fastervlm"

    def vision_layers(self, num_vision_layers: int, feature_layer: int) -> tuple[int, ...]:
        return (feature_layer,)

    def select_vision(self, view: VisionView, keep: int) -> Selection:
        scores = cls_importance(view, self.name)
        quotas = unit_quotas(view, keep)
        if quotas is None:
            return Selection(top_k(scores, keep))
        return Selection(top_k_per_unit(scores, view.unit_of, view.num_units, quotas))
