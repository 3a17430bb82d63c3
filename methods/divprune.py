"""DivPrune: keep the most diverse visual tokens (max-min diversity greedy on cosine distance)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from prunebench.core import PruneBenchError, Selection, VisionStagePruner
from prunebench.registry import register_method
from prunebench.views import VisionView


@register_method("divprune")
@dataclass
class DivPrune(VisionStagePruner):
    """DivPrune (Alvar et al., "DivPrune: Diversity-based Visual Token Pruning for Large Multimodal Models",
    CVPR 2025, arXiv 2503.02175), acting after the projector, before the first LLM layer.

    Algorithm (``vbdi/divprune`` @799e2d9, ``llava_arch.py`` ``DivPrune``), budget k = tokens entering the LLM:
      1. D = 1 - cos(x_i, x_j) over the projected visual tokens (``view.projected``, 4096-d on LLaVA-7B);
      2. first pick: the token whose nearest *other* token is farthest (second-smallest entry of its column
         of D; the smallest is its own ≈0 distance), first index on ties;
      3. k - 1 times: pick the token whose distance to its nearest picked token is largest (first index on
         ties); the nearest-picked distances are updated incrementally with one row of D per pick
         (algebraically the original's min over the picked rows), so each pick is a few (B, N) tensor ops;
      4. keep the picks in original order; compact positions (the sequence is simply shorter).
    The budget maps to the original's ratio as r = k / N (the official scripts' r = 0.098 is 56 of 576).

    Duplicate picks: the original never excludes picked tokens, so once every unpicked token is an exact (or
    rounding-level) duplicate of a picked one, a picked token can win the argmax again, and from then on the
    same token is re-picked for every remaining slot: the LLM gets fewer distinct tokens than the budget and
    copies of one embedding. ``repick="mask"`` (default, as MMTok's port, ``Ironieser/MMTok`` @d1522cd)
    excludes picked tokens, so exactly k distinct tokens enter the LLM; it equals the original whenever the
    original picks no duplicate. ``repick="official"`` runs the unmasked greedy and raises if a duplicate pick
    occurs (the budget contract cannot hold k distinct tokens then), so a fidelity run can prove the two agree.

    ``space="projected"`` (default) is the original's post-projector space; ``"vision"`` uses the ViT
    features before the projector. Deviations: fp32 distances (original: fp16 cosine matrix); batches above 1
    (the original reads batch element 0).

    Multi-crop inputs (LLaVA-NeXT): one global selection over all the view's candidate tokens, as the original
    does over the whole AnyRes image span, with one difference: the original's span includes the
    ``image_newline`` token closing each row of the unpadded layout, and those compete as ordinary candidates
    there; on stock LLaVA-NeXT the adapter keeps every newline and never offers it as a candidate (they are
    outside the budget, ``Stats.extra_visual_tokens``), so here k counts image tokens only and no budget is
    spent on newlines. Video-LLaVA (not in the paper): one global selection over all frames' tokens, the
    faithful port of its LLaVA-NeXT-Video run.

    No [CLS] is involved, so towers without one need no replacement signal. On Qwen2.5-VL the candidates are
    the 2x2 merge units: ``"projected"`` = the merger's output (the LLM-space embedding, the literal analogue of
    "post-projector", the default here), ``"vision"`` = the merger's input (the unit's four ViT
    outputs after ``ln_q``, concatenated). MMTok's community port instead averages the four final ViT hidden
    states (1280-d), a third space that prunebench does not offer; it also masks picked tokens, as
    ``repick="mask"`` does. Kept tokens keep their M-RoPE positions (the adapter's rule for every method).
    """

    repick: str = "mask"
    space: str = "projected"

    signals = ("projected visual tokens (cosine distance)",)
    paper = "Alvar et al., CVPR 2025 (arXiv 2503.02175)"
    citation = "alvar2025divprune"

    def __post_init__(self) -> None:
        if self.repick not in ("mask", "official"):
            raise PruneBenchError(f"divprune repick must be 'mask' or 'official', got {self.repick!r}")
        if self.space not in ("projected", "vision"):
            raise PruneBenchError(f"divprune space must be 'projected' or 'vision', got {self.space!r}")

    def select_vision(self, view: VisionView, keep: int) -> Selection:
        tokens = view.projected if self.space == "projected" else view.features
        picked = max_min_diversity(tokens, keep, mask_picked=self.repick == "mask")
        if self.repick == "official":
            ordered = picked.sort(dim=-1).values
            repeated = (ordered[:, 1:] == ordered[:, :-1]).any(dim=1)
            if bool(repeated.any()):
                rows = repeated.nonzero().squeeze(1).tolist()
                raise PruneBenchError(
                    f"divprune (repick='official') picked a token twice for batch rows {rows}: the original would feed "
                    f"fewer than {keep} distinct tokens, which the budget contract refuses; use repick='mask'"
                )
        return Selection.sorted(picked)


def max_min_diversity(tokens: torch.Tensor, k: int, mask_picked: bool = True) -> torch.Tensor:
    """(B, k) indices in pick order of DivPrune's greedy max-min selection over ``tokens`` (B, N, D).

    ``mask_picked=False`` reproduces the original exactly, including its possible repeated picks.
    """
    unit = F.normalize(tokens.float(), dim=-1)
    distance = 1.0 - unit @ unit.transpose(1, 2)  # (B, N, N); column j holds j's distances to every token
    bsz, num, _ = distance.shape
    rows = torch.arange(bsz, device=distance.device)
    picked = torch.empty(bsz, k, dtype=torch.long, device=distance.device)
    # second-smallest entry of each column (its nearest other token); topk(2) gives kthvalue's value, ~4x faster
    isolation = distance.topk(2, dim=1, largest=False).values[:, 1] if num > 1 else distance[:, 0]
    choice = isolation.argmax(dim=1)  # argmax returns the first maximal index
    nearest = distance[rows, choice].clone()  # distance of every token to its nearest picked token
    for i in range(k):
        if i:
            choice = nearest.argmax(dim=1)
            nearest = torch.minimum(nearest, distance[rows, choice])
        picked[:, i] = choice
        if mask_picked:
            nearest[rows, choice] = float("-inf")
    return picked
