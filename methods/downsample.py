"""Image downsampling control: resize the image before the processor so a dynamic-resolution model makes fewer tokens."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image

from prunebench.core import Plan, PlanContext, PruneBenchError, Selection, UnsupportedModel, VisionStagePruner
from prunebench.registry import register_method
from prunebench.views import VisionView

if TYPE_CHECKING:  # typing only: methods sit beside the adapters, not above them
    from prunebench.adapters.base import ModelAdapter, Sample

RESAMPLING = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "lanczos": Image.LANCZOS}


def grid_for_budget(budget: int, rows: int, cols: int) -> tuple[int, int]:
    """(rows', cols') with rows'·cols' = ``budget`` exactly and the aspect closest to rows x cols (in log ratio,
    ties to more rows): 64 tokens of a square image -> 8 x 8; of a 9 x 12 one -> 8 x 8 over 4 x 16."""
    target = math.log(rows / cols)
    pairs = [(r, budget // r) for r in range(1, budget + 1) if budget % r == 0]
    return min(pairs, key=lambda p: (abs(math.log(p[0] / p[1]) - target), -p[0]))


@register_method("downsample")
@dataclass
class Downsample(VisionStagePruner):
    """The downsampling control (VTC-Bench: Liao et al., "Are We Using the Right Benchmark: An Evaluation Framework for
    Visual Token Compression Methods", ACL 2026, arXiv 2510.07143; code github.com/Chenfei-Liao/VTC-Bench @ 983e443,
    ``external/DART/lmms-eval/lmms_eval/models/qwen2_vl.py``): the image is made smaller before the processor, so a
    dynamic-resolution model simply produces fewer visual tokens; nothing is selected.

    Budget -> size. VTC-Bench divides both sides by an integer k (budget label 1/k², the real count off by the
    processor's rounding to multiples of 28). prunebench needs the count exactly: the image is resized to
    (28·cols', 28·rows') pixels with rows'·cols' = B merged tokens, the factor pair of B closest to the image's own
    aspect (:func:`grid_for_budget`; a budget >= the image's token count leaves it untouched, and B must give at
    least the processor's minimum pixels). Prime budgets therefore give 1 x B strips: prefer budgets with a
    near-square factorisation. ``resample`` is PIL's filter (VTC-Bench: bicubic); ``jpeg`` re-encodes every image
    at PIL's default quality 75 as VTC-Bench does (also unresized ones, so with it on, keeping every token is no
    longer the stock model; off by default).

    Families: Qwen2.5-VL images only. LLaVA-1.5, LLaVA-NeXT's crops and Video-LLaVA take a fixed-size input (336 /
    224 px): a smaller image is resized back up by the processor and changes nothing unless the ViT's position
    embeddings are interpolated, which is no faithful control, so they refuse (``UnsupportedModel``); videos refuse
    too (VTC-Bench does not downsample them). The mechanism: a method's ``preprocess(sample, budget, adapter)``
    returns the sample the adapter then prepares (:class:`prunebench.engine.Pruner` honours it).
    """

    resample: str = "bicubic"
    jpeg: bool = False

    signals = ("the image before the processor",)
    paper = "Liao et al., ACL 2026 (arXiv 2510.07143), VTC-Bench's downsampling baseline"
    citation = "liao2026vtcbench"

    def __post_init__(self) -> None:
        if self.resample not in RESAMPLING:
            raise PruneBenchError(f"downsample resample must be one of {sorted(RESAMPLING)}, got {self.resample!r}")

    def plan(self, budget: int, ctx: PlanContext) -> Plan:
        return ctx.plan(vision=budget)

    def preprocess(self, sample: Sample, budget: int, adapter: ModelAdapter) -> Sample:
        """The sample with its image resized to exactly ``budget`` merged tokens (unchanged at or above its count)."""
        if not getattr(adapter, "dynamic_resolution", False):
            raise UnsupportedModel(
                f"downsample needs a dynamic-resolution model (Qwen2.5-VL, Qwen3-VL); {adapter.family or 'this model'} takes a fixed-size input"
            )
        if sample.modality != "image":
            raise UnsupportedModel("downsample resizes images only (VTC-Bench does not downsample videos)")
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        processor = adapter.processor.image_processor
        factor = adapter.patch * adapter.merge
        low, high = processor.size["shortest_edge"], processor.size["longest_edge"]
        image = sample.image.convert("RGB")
        height, width = smart_resize(image.height, image.width, factor=factor, min_pixels=low, max_pixels=high)
        rows, cols = height // factor, width // factor
        if budget < rows * cols:
            rows, cols = grid_for_budget(budget, rows, cols)
            if rows * cols * factor * factor < low or max(rows, cols) / min(rows, cols) > 200:
                raise UnsupportedModel(f"downsample: {budget} tokens as a {rows}x{cols} grid is below the processor's minimum size or too thin")
            image = image.resize((cols * factor, rows * factor), RESAMPLING[self.resample])
        elif not self.jpeg:
            return sample
        if self.jpeg:
            import io

            buffer = io.BytesIO()
            image.save(buffer, format="JPEG")
            image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
        return dataclasses.replace(sample, image=image)

    def select_vision(self, view: VisionView, keep: int) -> Selection:
        raise PruneBenchError(
            f"downsample acts before the processor: the input should already hold {keep} visual tokens but has {view.num_tokens}; "
            "run it through prunebench.engine.Pruner.generate, which applies its preprocess"
        )
