"""Measured prefill FLOPs: one pruned prefill through the engine under ``FlopCounterMode``.

:func:`measure_prefill_flops` runs ``Pruner.generate(max_new_tokens=1)`` on one sample under
``torch.utils.flop_counter.FlopCounterMode`` and splits the count into the vision side (ViT + projector,
everything outside the ``...ForConditionalGeneration`` module) and the LLM side (decoder, selection, ``lm_head``
at the one position ``generate`` keeps), next to the analytic counts of :mod:`prunebench.costs` (which also
registers the CPU SDPA kernel's FLOP formula that torch's counter lacks).
"""

from __future__ import annotations

from torch.utils.flop_counter import FlopCounterMode

from prunebench.adapters.base import Batch, ModelAdapter
from prunebench.core import PruningMethod
from prunebench.costs import FlopCount, VisionShape, llm_prefill_flops, vision_flops
from prunebench.engine.pruner import Pruner


def measure_prefill_flops(
    adapter: ModelAdapter, method: PruningMethod, budget: int | None, batch: Batch, budget_mode: str = "average", seed: int = 0, budget_scope: str = "image"
) -> FlopCount:
    """Count one pruned prefill of a batch of one sample with ``FlopCounterMode`` (real tensors, any device)."""
    if len(batch.samples) != 1:
        raise ValueError("measure_prefill_flops counts one sequence; pass a batch of one sample")
    with Pruner(adapter, method, budget, budget_mode=budget_mode, seed=seed, budget_scope=budget_scope, count_select_flops=True) as pruner:
        with FlopCounterMode(display=False, depth=None) as counter:
            out = pruner.generate(batch, max_new_tokens=1)
        layers_run = adapter.vision_layers_run(pruner._vision_capture_layers())  # the ViT layers encode() ran
    counts = counter.get_flop_counts()
    total = int(sum(counts.get("Global", {}).values()))
    # the adapter calls the vision tower and projector directly, so only the LLM runs inside the model's own module
    llm = int(sum(counts.get(type(adapter.model).__name__, {}).values()))
    stats = out.stats
    shape = adapter.llm_shape
    projected = stats.plan.vision if stats.plan.vision is not None else stats.plan.num_visual
    # The analytic ViT formula covers LLaVA-1.5's single CLIP pass + projector. Other families (NeXT crops,
    # Video-LLaVA frames, Qwen's windowed ViT) have none: their analytic vision count is None, not a copy of the
    # measured one, so "measured and analytic agree" is never claimed where nothing was computed.
    analytic_vision = None
    if getattr(adapter, "family", "") == "llava":
        try:
            analytic_vision = vision_flops(VisionShape.from_llava_config(adapter.model.config), projected, layers_run)
        except (AttributeError, TypeError):
            pass
    return FlopCount(
        measured_total=total,
        measured_vision=total - llm,
        measured_llm=llm,
        analytic_vision=analytic_vision,
        analytic_llm=llm_prefill_flops(shape, stats.tokens_per_layer, stats.text_tokens),
        tokens_per_layer=list(stats.tokens_per_layer),
        text_tokens=stats.text_tokens,
        measured_select_llm=stats.select_llm_flops,
    )
