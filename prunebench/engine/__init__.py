"""The mechanics every method shares: vision stage, LLM-stage cuts, positions, masks, KV cache, timings.

* :mod:`~prunebench.engine.pruner`: :class:`Pruner`, its lifecycle (hooks, attention routing), the grouping of a
  batch by visual layout, the vision stage and the assembly of the LLM input;
* :mod:`~prunebench.engine.cuts`: the LLM-stage cuts the decoder layers' pre-hooks make during prefill, replay and
  decoding;
* :mod:`~prunebench.engine.outputs`: :class:`GenerationOutput`, :class:`Stats` and the run-time token/KV contract;
* :mod:`~prunebench.engine.flops`: :func:`measure_prefill_flops`, one pruned prefill under ``FlopCounterMode``.
"""

from prunebench.engine.flops import measure_prefill_flops
from prunebench.engine.outputs import GenerationOutput, SampleGroup, Stats, contract_problems
from prunebench.engine.pruner import Pruner

__all__ = ["GenerationOutput", "Pruner", "SampleGroup", "Stats", "contract_problems", "measure_prefill_flops"]
