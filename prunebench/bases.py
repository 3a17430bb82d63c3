"""Scored bases: a method that ranks tokens writes ``score(view)`` and its hyper-parameters; the base does the rest.

:class:`ScoredVisionPruner` (vision stage) and :class:`ScoredLLMPruner` (one cut inside the LLM, FastV-style)
own what every score-ranking method needs and would otherwise write out again:

* **capture layers**: the ViT layers whose queries/keys are captured for the score, declared as the class
  attribute ``capture`` (``"feature"`` = the layer whose output the LLM receives, or 0-based / negative ViT
  layer indices); a method whose layers depend on its hyper-parameters overrides ``vision_layers``;
* **per-unit quotas**: on inputs of several crops (LLaVA-NeXT AnyRes) or frames (video) each unit keeps its
  share of the budget (:func:`prunebench.views.unit_quotas`), ranked by its own scores, as the originals prune
  every crop / frame on its own; ``per_unit = False`` ranks all tokens of the input together instead;
* **one tie rule**: equal scores, the lower index wins (:func:`prunebench.core.top_k`, a stable sort), on the
  single-image and the per-unit paths alike, so a kept set is the same on CPU and GPU.

A minimal method::

    @register_method("cls-topk")
    @dataclass
    class ClsTopK(ScoredVisionPruner):
        def score(self, view):
            return view.importance()   # [CLS] attention; received attention on towers without [CLS]
"""

from __future__ import annotations

from typing import ClassVar

import torch

from prunebench.core import Selection, SingleCutLLMPruner, VisionStagePruner, ranked, top_k
from prunebench.views import LayerView, VisionView, ranked_per_unit, unit_quotas


class ScoredVisionPruner(VisionStagePruner):
    """A vision-stage method that keeps the ``keep`` tokens of highest ``score(view)`` (B, N), higher = keep.

    Class attributes: ``capture`` (ViT layers to capture: ``"feature"`` or layer indices; default the feature
    layer) and ``per_unit`` (default True: each crop / frame keeps its quota). Methods that add to the ranking
    (merged tokens, diversity steps) call :meth:`rank_units` / :meth:`keep_top` from their own ``select_vision``.
    """

    capture: ClassVar[tuple[int | str, ...]] = ("feature",)
    per_unit: ClassVar[bool] = True

    def score(self, view: VisionView) -> torch.Tensor:
        """(B, N) one score per candidate token of ``view``; higher = keep."""
        raise NotImplementedError(f"{self.name} must define score(view) or select_vision(view, keep)")

    def vision_layers(self, num_vision_layers: int, feature_layer: int) -> tuple[int, ...]:
        layers = {feature_layer if layer == "feature" else int(layer) % num_vision_layers for layer in self.capture}
        return tuple(sorted(layers))

    def rank_units(self, view: VisionView, scores: torch.Tensor, keep: int) -> list[tuple[torch.Tensor, int]]:
        """[(tokens (B, n_u) by descending score, quota)] per unit (one entry for a single image or when
        ``per_unit`` is False); the quotas sum to ``keep``; ties go to the lower index."""
        quotas = unit_quotas(view, keep) if self.per_unit else None
        if quotas is None:
            return [(ranked(scores), keep)]
        return list(zip(ranked_per_unit(scores, view.unit_of, view.num_units), quotas))

    def keep_top(self, view: VisionView, scores: torch.Tensor, keep: int) -> torch.Tensor:
        """(B, keep) indices of the highest ``scores``, each unit its quota, in original order."""
        units = self.rank_units(view, scores, keep)
        if len(units) == 1:
            return top_k(scores, keep)
        return torch.cat([order[:, :quota] for order, quota in units], dim=1).sort(dim=-1).values

    def select_vision(self, view: VisionView, keep: int) -> Selection:
        return Selection(self.keep_top(view, self.score(view), keep))


class ScoredLLMPruner(SingleCutLLMPruner):
    """A method that prunes once before decoder layer ``layer`` and keeps the ``keep`` visual tokens of highest
    ``score(view)`` (B, n) over the visual tokens still present; ties to the lower index. The base captures
    layer ``layer - 1``'s queries/keys and solves the budget (:func:`prunebench.core.solve_single_cut`)."""

    def score(self, view: LayerView) -> torch.Tensor:
        """(B, n) one score per visual token of ``view``; higher = keep."""
        raise NotImplementedError(f"{self.name} must define score(view) or select_llm(view, keep)")

    def select_llm(self, view: LayerView, keep: int) -> Selection:
        return Selection(top_k(self.score(view), keep))
