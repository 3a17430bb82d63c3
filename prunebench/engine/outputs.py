"""What ``Pruner.generate`` returns, and the run-time token/KV contract the measured counts must meet.

:class:`Stats` is what one group's ``generate`` measured: the plan, the visual tokens each decoder layer saw, the
KV cache after prefill (:func:`cache_after_prefill`), timings, kept indices. After ``generate`` the measured
per-layer visual tokens and KV lengths are compared with the plan (:func:`contract_problems`):
``Stats.contract_ok`` / ``contract_detail`` flag a cell whose counts miss it.

A batch whose samples have different visual layouts runs as several groups; :func:`merge_groups` puts their
outputs back in input order (:class:`GenerationOutput` ``.groups`` holds each group's :class:`SampleGroup`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from prunebench.adapters.base import LLMInputs
from prunebench.core import Plan, PruneBenchError


@dataclass
class Stats:
    """What one ``generate`` call measured."""

    plan: Plan
    tokens_per_layer: list[int]  # visual tokens each decoder layer saw during prefill (measured)
    kv_lengths: list[int] = field(default_factory=list)  # cached tokens per layer after prefill (measured)
    kv_bytes: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)
    kept: dict[str, torch.Tensor] = field(default_factory=dict)
    prompt_tokens: int = 0  # LLM input length after the vision stage (padding included)
    text_tokens: int = 0
    budget_scope: str = "image"
    units: int = 1  # crops / frames of the input (the per-unit budget was multiplied by this)
    # visual-span tokens outside the budget, never pruning candidates (LLaVA-NeXT AnyRes: one image_newline per
    # row); they reach every layer and are counted in ``text_tokens``, so costs include them
    extra_visual_tokens: int = 0
    # FLOPs of the in-LLM selection steps (scores from captured q/k, gathering), counted only when the pruner's
    # ``count_select_flops`` is set (prunebench.engine.flops.measure_prefill_flops); they run inside the model's
    # forward, so a FLOP counter attributes them to the LLM, which is not what the analytic decoder formula describes
    select_llm_flops: int = 0
    # run-time token contract: measured per-layer visual tokens and KV lengths equal what the plan implies
    contract_ok: bool = True
    contract_detail: str = ""

    @property
    def final_tokens(self) -> int:
        return self.tokens_per_layer[-1]

    @property
    def average_tokens(self) -> float:
        return sum(self.tokens_per_layer) / len(self.tokens_per_layer)

    def check_contract(self) -> None:
        """Set ``contract_ok`` / ``contract_detail`` from the measured counts (see :func:`contract_problems`)."""
        problems = contract_problems(self.plan, self.tokens_per_layer, self.kv_lengths, self.text_tokens)
        self.contract_ok, self.contract_detail = not problems, "; ".join(problems)


def contract_problems(plan: Plan, tokens_per_layer: list[int], kv_lengths: list[int], text_tokens: int) -> list[str]:
    """How measured prefill counts miss ``plan`` (empty: the token contract holds).

    Visual tokens per decoder layer must equal ``plan.tokens_per_layer()``, and each layer's KV cache must hold
    its text tokens (padding and any extra visual tokens included) plus the visual tokens it saw. KV lengths
    are skipped when none were measured (generation without a cache).
    """
    planned = plan.tokens_per_layer()
    problems = []
    if list(tokens_per_layer) != planned:
        problems.append(f"measured visual tokens per layer {list(tokens_per_layer)} != plan {planned}")
    expected_kv = [text_tokens + n for n in planned]
    if kv_lengths and list(kv_lengths) != expected_kv:
        problems.append(f"KV lengths per layer {list(kv_lengths)} != {expected_kv} implied by the plan")
    return problems


def cache_after_prefill(cache: Any, steps: int) -> tuple[list[int], int]:
    """Per-layer cached tokens after prefill and the bytes they take, measured from the cache tensors."""
    lengths, total = [], 0
    for layer in getattr(cache, "layers", []):
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if keys is None or keys.dim() < 3:
            lengths.append(0)
            continue
        length = keys.shape[-2]
        prefill = length - (steps - 1)
        lengths.append(prefill)
        per_token = (keys.numel() * keys.element_size() + values.numel() * values.element_size()) / max(length, 1)
        total += round(per_token * prefill)
    return lengths, total


@dataclass
class SampleGroup:
    """Samples of a batch that ran together (equal visual layout), their stats and LLM inputs."""

    indices: list[int]
    stats: Stats
    llm_inputs: LLMInputs | None = None


class _MixedStats:
    """Stands in for ``GenerationOutput.stats`` when a batch ran as several groups: their stats differ."""

    def __init__(self, groups: int):
        self._groups = groups

    def __getattr__(self, name: str) -> Any:
        raise PruneBenchError(
            f"this batch mixed visual-token layouts and ran as {self._groups} groups with different plans; read out.groups[g].stats or out.sample_stats(i)"
        )


@dataclass
class GenerationOutput:
    """Generated tokens of a batch in input order.

    ``stats`` is the batch's stats when it ran as one group; a batch that mixed visual layouts ran as several
    ``groups`` (each with its own plan), and then ``sample_stats(i)`` / ``kept(stage, i)`` give per-sample
    values. Logits of steps a group did not run (it stopped earlier) are NaN; such tokens are padding.
    """

    tokens: torch.Tensor  # (B, T) generated tokens only
    texts: list[str]
    stats: Stats
    logits: tuple[torch.Tensor, ...] | None = None  # per step (B, V), when requested
    llm_inputs: LLMInputs | None = None
    groups: list[SampleGroup] = field(default_factory=list)

    @property
    def contract_ok(self) -> bool:
        """Every group's measured token counts and KV lengths met its plan."""
        return all(group.stats.contract_ok for group in self.groups) if self.groups else self.stats.contract_ok

    def _locate(self, sample: int) -> tuple[SampleGroup, int]:
        for group in self.groups:
            if sample in group.indices:
                return group, group.indices.index(sample)
        raise IndexError(f"sample {sample} is not in this output")

    def sample_stats(self, sample: int) -> Stats:
        """The stats of the group sample ``sample`` ran in."""
        return self._locate(sample)[0].stats

    def kept(self, stage: str, sample: int) -> torch.Tensor:
        """Sample ``sample``'s kept indices at ``stage`` ("vision", "layer2", ...)."""
        group, row = self._locate(sample)
        return group.stats.kept[stage][row]


def merge_groups(outs: list[tuple[list[int], GenerationOutput]], batch: int, pad_id: int) -> GenerationOutput:
    """Put the outputs of the groups of one batch back in input order (tokens right-padded with ``pad_id``)."""
    steps = max(out.tokens.shape[1] for _, out in outs)
    first = outs[0][1].tokens
    tokens = first.new_full((batch, steps), pad_id)
    texts: list[str] = [""] * batch
    with_logits = all(out.logits is not None for _, out in outs)
    logits = None
    if with_logits:
        vocab = outs[0][1].logits[0].shape[-1]
        logits = [outs[0][1].logits[0].new_full((batch, vocab), float("nan")) for _ in range(steps)]
    groups = []
    for indices, out in outs:
        index = torch.tensor(indices, device=first.device)
        tokens[index, : out.tokens.shape[1]] = out.tokens
        for row, i in enumerate(indices):
            texts[i] = out.texts[row]
        if logits is not None:
            for step, step_logits in enumerate(out.logits):
                logits[step][index] = step_logits
        groups.append(SampleGroup(indices, out.stats, out.llm_inputs))
    return GenerationOutput(tokens, texts, _MixedStats(len(groups)), tuple(logits) if logits is not None else None, None, groups)  # type: ignore[arg-type]
