"""The mechanics every method shares: vision stage, LLM-stage hooks, positions, masks, KV cache, timings.

``Pruner(adapter, method, budget)`` is a context manager bound to one model instance. On entry it routes the
model's attention through the capturing wrapper (:mod:`prunebench.attention`) and registers a forward
pre-hook on each decoder layer; on exit (also on an exception) it removes every hook and restores the
attention implementation, leaving the model exactly as it was.

One ``generate`` call:

1. the adapter runs the vision tower, capturing q/k only at the ViT layers the method asked for;
2. ``method.plan`` maps the budget to per-stage keep counts, checked against the budget contract;
3. vision stage: ``method.select_vision`` picks tokens (plus merged ones); only those are projected;
4. the adapter assembles the shortened LLM input (embeddings, 2-D mask, position ids per policy);
5. ``model.generate`` runs; at each LLM stage K the pre-hook of layer K builds a :class:`LayerView` from
   the hidden states and layer K-1's captured q/k, calls ``method.select_llm``, and gathers hidden states,
   (cos, sin), position ids and any 4-D mask. Layers >= K therefore cache only the kept tokens, while
   positions stay in the unpruned prompt's coordinates, so decoding continues at the right RoPE index.
   During decoding the hooks re-index a materialised mask's key axis to each layer's cached tokens.
   Two opt-ins for SparseVLM-style methods: a ``RecycledSelection`` gives kept slots new hidden states, and a
   method with ``llm_position_policy = "renumber"`` gets positions 0..n'-1 after each cut (generated tokens
   at each layer's own valid cache length) and may append merged tokens after the kept visual tokens.
   Renumbering is refused on M-RoPE families (Qwen2.5-VL): 0..n'-1 would turn the kept image tokens' 3-D
   (t, h, w) positions into 1-D ones, and DESIGN.md keeps them as computed on the unpruned sequence.
6. after ``generate`` the measured per-layer visual tokens and KV lengths are compared with the plan (the
   run-time token contract): ``Stats.contract_ok`` / ``contract_detail`` flag a cell whose counts miss it.

``LayerView.position_ids`` are the position ids of the tokens present: the LLM input's ``position_ids``
(``(3, B, L)`` M-RoPE rows on Qwen2.5-VL) gathered to them, or the last renumbering cut's. They come from the
engine's state, not from the decoder layer's ``position_ids`` argument, which Qwen's text model sets to None.

Batches whose samples have different visual-token counts (LLaVA-NeXT AnyRes and Qwen2.5-VL images of
different sizes, Video-LLaVA images next to videos) are split into groups of equal layout
(``adapter.group_key``); each group is prepared and generated as its own batch and the outputs are put back in
the input order (``GenerationOutput.groups`` holds each group's stats). This keeps every tensor of a group
rectangular, so nothing in the hooks changes, and a sample's result never depends on its batch-mates.

``budget_scope``: ``image``/``video`` (default) = the budget counts all visual tokens of a sample;
``crop``/``frame`` = the budget counts per unit, so the plan is made for ``budget * view.num_units`` tokens.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import StoppingCriteria, StoppingCriteriaList

from prunebench.adapters.base import UNIT_SCOPES, WHOLE_SCOPES, Batch, LLMInputs, ModelAdapter, VisualLayout
from prunebench.attention import Captured, attention_probe, capture
from prunebench.core import (
    BudgetMode,
    Plan,
    PlanContext,
    PruneBenchError,
    PruningMethod,
    Selection,
    SelectionError,
    check_budget,
    check_plan_meets_budget,
)
from prunebench.views import LayerView, RecycledSelection, sample_generators


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
    # ``count_select_flops`` is set (costs.measure_prefill_flops); they run inside the model's forward, so a
    # FLOP counter attributes them to the LLM, which is not what the analytic decoder formula describes
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
            f"this batch mixed visual-token layouts and ran as {self._groups} groups with different plans; "
            "read out.groups[g].stats or out.sample_stats(i)"
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


class _StepClock(StoppingCriteria):
    """Records the time each generated token becomes available (never stops generation)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.times: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        _sync(self.device)
        self.times.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class _Cut:
    keep_local: torch.Tensor  # (B, L_out) positions kept, in the sequence entering this layer
    keep_abs: torch.Tensor  # (B, L_out) the same tokens, in LLM-input (prompt) coordinates
    in_len: int  # prompt-part length entering this layer
    visual_local: torch.Tensor | None = None  # (B, k) kept visual tokens' positions after the cut (recycling only)
    values: torch.Tensor | None = None  # (B, k, D) new hidden states of recycled tokens
    replace: torch.Tensor | None = None  # (B, k) bool: which kept visual tokens take ``values``
    # merged tokens added at this stage (Selection.append): keep_local holds -1-m for merged token m
    merged: torch.Tensor | None = None  # (B, c, D)
    # per-layer renumbering (llm_position_policy "renumber", SparseVLM v1/v1.5): prompt positions 0..n'-1 after
    # the cut; generated tokens continue at this layer's own valid cache length (shift = n' - n_prompt)
    positions: torch.Tensor | None = None  # (B, L_out)
    shift: torch.Tensor | None = None  # (B, 1)


@dataclass
class _State:
    plan: Plan
    llm_inputs: LLMInputs
    generators: list[torch.Generator]
    prompt_len: int
    num_text: int
    visual_index: torch.Tensor
    valid: torch.Tensor
    abs_index: torch.Tensor
    tokens_per_layer: list[int]
    captured: dict[int, Captured] = field(default_factory=dict)
    cuts: dict[int, _Cut] = field(default_factory=dict)
    kept: dict[str, torch.Tensor] = field(default_factory=dict)
    prefilled: bool = False
    first_pass: bool = False
    decoding: bool = False
    extra: int = 0
    select_s: float = 0.0
    select_flops: int = 0
    gathered: dict[str, Any] | None = None
    input_embeds: torch.Tensor | None = None  # layer-0 input of the first prefill pass (LayerView.input_embeds)


class Pruner:
    """Apply ``method`` at ``budget`` to ``adapter``'s model; use as a context manager."""

    def __init__(
        self,
        adapter: ModelAdapter,
        method: PruningMethod,
        budget: int | None,
        budget_mode: BudgetMode = "average",
        seed: int = 0,
        budget_scope: str = "image",
        count_select_flops: bool = False,
    ):
        if budget_mode not in ("average", "final"):
            raise PruneBenchError(f"budget mode must be 'average' or 'final', got {budget_mode!r}")
        scopes = tuple(getattr(adapter, "budget_scopes", ("image",)))
        if budget_scope not in WHOLE_SCOPES + scopes:
            raise PruneBenchError(
                f"--budget-scope {budget_scope!r} is not defined for {adapter.family or type(adapter).__name__}; "
                f"choose one of {', '.join(dict.fromkeys(WHOLE_SCOPES + scopes))}"
            )
        self.budget_scope = budget_scope
        self.adapter = adapter
        self.method = method
        if self._renumber() and getattr(adapter, "mrope", False):
            raise PruneBenchError(
                f"{method.name} renumbers positions per layer (llm_position_policy='renumber'), which is not defined for "
                f"{adapter.family}'s 3-D M-RoPE positions: kept tokens keep the (t, h, w) positions of the unpruned "
                "sequence. Use the method's original-positions setting (llm_position_policy='original'; for SparseVLM "
                "v1.5: positions='original' with recycle='inplace' or 'none')"
            )
        self.budget = budget
        self.budget_mode = budget_mode
        self.seed = seed
        self._stack: contextlib.ExitStack | None = None
        self._state: _State | None = None
        self._num_layers = len(adapter.decoder_layers())
        self.count_select_flops = count_select_flops  # costs.measure_prefill_flops: the in-LLM selections' FLOPs apart

    # -- lifecycle -----------------------------------------------------------------------------------------
    def __enter__(self) -> "Pruner":
        stack = contextlib.ExitStack()
        try:
            if self._captures_attention():
                stack.enter_context(attention_probe(self.adapter.model))
            for index, layer in enumerate(self.adapter.decoder_layers()):
                handle = layer.register_forward_pre_hook(self._make_hook(index), with_kwargs=True)
                stack.callback(handle.remove)
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def _vision_capture_layers(self) -> tuple[int, ...]:
        """ViT layers whose queries/keys the method's vision stage reads (none without a vision stage)."""
        method, adapter = self.method, self.adapter
        return tuple(method.vision_layers(adapter.num_vision_layers, adapter.feature_layer)) if "vision" in method.stages else ()

    def _captures_attention(self) -> bool:
        """Whether any stage reads queries/keys: only then is the model's attention routed through the capturing
        wrapper, so a method without attention signals (random, the unpruned baseline) runs the stock kernel path."""
        return "llm" in self.method.stages or bool(self._vision_capture_layers())

    def __exit__(self, *exc: Any) -> None:
        self._state = None
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    # -- planning --------------------------------------------------------------------------------------------
    def plan_for(self, num_visual: int, num_units: int = 1) -> Plan:
        """The checked plan for an input with ``num_visual`` visual tokens in ``num_units`` crops/frames
        (None budget: keep everything). Under a per-unit scope the budget is multiplied by ``num_units``."""
        ctx = PlanContext(num_visual, self._num_layers, self.budget_mode)
        if self.budget is None:
            return ctx.plan()
        budget = check_budget(self.budget, num_visual)
        if self.budget_scope in UNIT_SCOPES:
            budget = check_budget(budget * num_units, num_visual)
        plan = self.method.plan(budget, ctx)
        check_plan_meets_budget(plan, budget, self.budget_mode, self.method.name)
        return plan

    # -- generation ------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, batch: Batch, max_new_tokens: int = 16, output_logits: bool = False, **generate_kwargs: Any) -> GenerationOutput:
        if self._stack is None:
            raise RuntimeError("use the Pruner as a context manager: `with Pruner(...) as pruner:`")
        # a method that acts before the processor (the downsampling control) declares preprocess(sample, budget,
        # adapter) -> Sample; the batch is prepared again from the samples it returns
        preprocess = getattr(self.method, "preprocess", None)
        if preprocess is not None and self.budget is not None:
            samples = [preprocess(sample, self.budget, self.adapter) for sample in batch.samples]
            if any(new is not old for new, old in zip(samples, batch.samples)):
                batch = self.adapter.prepare(samples)
        keys = [self.adapter.group_key(sample) for sample in batch.samples]
        order: dict[Any, list[int]] = {}
        for i, key in enumerate(keys):
            order.setdefault(key, []).append(i)
        if len(order) == 1:
            out = self._generate_group(batch, max_new_tokens, output_logits, **generate_kwargs)
            out.groups = [SampleGroup(list(range(len(batch.samples))), out.stats, out.llm_inputs)]
            self._frozen_groups = [(list(range(len(batch.samples))), self._frozen)]
            return out
        outs, frozen = [], []
        for indices in order.values():
            sub = self.adapter.prepare([batch.samples[i] for i in indices])
            outs.append((indices, self._generate_group(sub, max_new_tokens, output_logits, **dict(generate_kwargs))))
            frozen.append((indices, self._frozen))
        self._frozen_groups = frozen
        return _merge_groups(outs, len(batch.samples), self._pad_id())

    def _pad_id(self) -> int:
        config = self.adapter.model.generation_config
        pad = config.pad_token_id if config.pad_token_id is not None else config.eos_token_id
        pad = pad[0] if isinstance(pad, (list, tuple)) else pad
        return int(pad if pad is not None else 0)

    def _generate_group(self, batch: Batch, max_new_tokens: int, output_logits: bool, **generate_kwargs: Any) -> GenerationOutput:
        """One batch of samples with the same visual layout (see the module docstring)."""
        adapter, method = self.adapter, self.method
        device = adapter.device
        timings: dict[str, float] = {}

        _sync(device)
        start = time.perf_counter()
        view = adapter.encode(batch, self._vision_capture_layers())
        view.generators = sample_generators(self.seed, batch.ids)
        view.model_name = adapter.name
        _sync(device)
        vision_end = time.perf_counter()
        timings["vision_ms"] = (vision_end - start) * 1e3

        plan = self.plan_for(view.num_tokens, getattr(view, "num_units", 1))
        select_start = time.perf_counter()
        visual, kept, vision_keep, layout = self._vision_stage(view, plan)
        _sync(device)
        vision_select_s = time.perf_counter() - select_start
        llm_inputs = adapter.assemble(batch, visual, kept, self._position_policy(), layout=layout)

        num_visual_in = llm_inputs.visual_index.shape[1]
        prompt_len = llm_inputs.inputs_embeds.shape[1]
        state = _State(
            plan=plan,
            llm_inputs=llm_inputs,
            generators=view.generators,
            prompt_len=prompt_len,
            num_text=prompt_len - num_visual_in,
            visual_index=llm_inputs.visual_index,
            valid=llm_inputs.attention_mask.bool(),
            abs_index=torch.arange(prompt_len, device=device).expand(len(batch.samples), -1),
            tokens_per_layer=[0] * self._num_layers,
        )
        if vision_keep is not None:
            state.kept["vision"] = vision_keep
        self._state = state
        requests = {adapter.decoder_attention(layer): _store(state.captured, layer) for layer in method.llm_signal_layers(plan)}

        clock = _StepClock(device)
        criteria = StoppingCriteriaList([clock, *generate_kwargs.pop("stopping_criteria", [])])
        try:
            with capture(requests):
                _sync(device)
                gen_start = time.perf_counter()
                out = adapter.model.generate(
                    inputs_embeds=llm_inputs.inputs_embeds,
                    attention_mask=llm_inputs.attention_mask,
                    position_ids=llm_inputs.position_ids,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    stopping_criteria=criteria,
                    return_dict_in_generate=True,
                    output_logits=output_logits,
                    **generate_kwargs,
                )
        finally:
            state.captured.clear()
            self._frozen = state
            self._state = None

        steps = out.sequences.shape[1]
        timings["select_ms"] = (vision_select_s + state.select_s) * 1e3
        timings["select_vision_ms"] = vision_select_s * 1e3
        timings["select_llm_ms"] = state.select_s * 1e3  # inside the prefill window below
        # everything between the vision encoder and generate() that is not selection: planning, assembly of the
        # LLM inputs, hook setup; so vision + select_vision + assemble + prefill is exactly the time to first token
        timings["assemble_ms"] = (gen_start - vision_end - vision_select_s) * 1e3
        if clock.times:
            timings["prefill_ms"] = (clock.times[0] - gen_start) * 1e3
            timings["ttft_ms"] = (clock.times[0] - start) * 1e3
            timings["decode_ms_per_token"] = ((clock.times[-1] - clock.times[0]) / (len(clock.times) - 1) * 1e3) if len(clock.times) > 1 else 0.0
            timings["generate_ms"] = (clock.times[-1] - gen_start) * 1e3
            timings["total_ms"] = (clock.times[-1] - start) * 1e3
        stats = Stats(plan=plan, tokens_per_layer=list(state.tokens_per_layer), timings_ms=timings, kept=dict(state.kept),
                      prompt_tokens=prompt_len, text_tokens=state.num_text, budget_scope=self.budget_scope,
                      units=getattr(view, "num_units", 1), extra_visual_tokens=llm_inputs.extra_visual_tokens,
                      select_llm_flops=state.select_flops)
        cache = getattr(out, "past_key_values", None)
        if cache is not None:
            stats.kv_lengths, stats.kv_bytes = _cache_after_prefill(cache, steps)
        problems = contract_problems(plan, stats.tokens_per_layer, stats.kv_lengths, stats.text_tokens)
        stats.contract_ok, stats.contract_detail = not problems, "; ".join(problems)
        return GenerationOutput(out.sequences, adapter.decode(out.sequences), stats, getattr(out, "logits", None), llm_inputs)

    @torch.inference_mode()
    def recompute(self, generated: torch.Tensor) -> torch.Tensor:
        """Greedy logits of the last ``generate`` recomputed without a KV cache on the same kept tokens.

        Each step runs the whole sequence (prompt + tokens so far) through the hooked model, replaying the
        recorded selections; returns (steps, B, V). The conformance kit compares it with cached generation.
        A batch that ran as several groups is recomputed group by group.
        """
        groups = getattr(self, "_frozen_groups", None)
        if not groups:
            raise RuntimeError("call generate() first")
        if len(groups) == 1:
            return self._recompute(groups[0][1], generated)
        result = None
        for indices, frozen in groups:
            index = torch.tensor(indices, device=generated.device)
            part = self._recompute(frozen, generated.index_select(0, index))
            if result is None:
                result = part.new_full((part.shape[0], generated.shape[0], part.shape[2]), float("nan"))
            result[:, index] = part
        return result

    def _recompute(self, frozen: "_State", generated: torch.Tensor) -> torch.Tensor:
        llm = frozen.llm_inputs
        embed = self.adapter.model.get_input_embeddings()
        bsz = generated.shape[0]
        all_logits = []
        for step in range(generated.shape[1]):
            new = generated[:, :step]
            embeds = torch.cat([llm.inputs_embeds, embed(new).to(llm.inputs_embeds.dtype)], dim=1)
            mask = torch.cat([llm.attention_mask, torch.ones(bsz, step, dtype=llm.attention_mask.dtype, device=new.device)], dim=1)
            last = llm.position_ids[..., -1:]
            positions = torch.cat([llm.position_ids, last + 1 + torch.arange(step, device=new.device)], dim=-1)
            frozen.prefilled, frozen.first_pass = True, False
            self._state = frozen
            try:
                out = self.adapter.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False)
            finally:
                self._state = None
            all_logits.append(out.logits[:, -1].float())
        return torch.stack(all_logits)

    # -- vision stage ------------------------------------------------------------------------------------------
    def _position_policy(self) -> str:
        return getattr(self.method, "position_policy", "compact")

    def _vision_stage(self, view, plan: Plan) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, VisualLayout]:
        """Projected visual tokens entering the LLM, the original indices they are (None if merged), the keep,
        and the layout (merged rows before/after the kept ones) the adapter needs to place them."""
        total = view.num_tokens
        bsz = view.batch_size
        if plan.vision is None or plan.vision == total:
            # A stage that keeps every token is the unpruned model, whatever the method would merge.
            kept = torch.arange(total, device=view.features.device).expand(bsz, -1)
            return view.projected, kept, (kept if "vision" in self.method.stages else None), VisualLayout(kept)
        selection = self.method.select_vision(view, plan.vision)
        selection.validate(bsz, total, plan.vision, f"{self.method.name} vision stage")
        keep = selection.keep.long()
        if "projected" in view.__dict__:  # the method already projected everything: reuse it
            visual = _gather_rows(view.projected, keep)
        else:
            visual = self.adapter.project(_gather_rows(view.features, keep))
        parts = [self.adapter.project(t) for t in (selection.prepend,) if t is not None]
        parts.append(visual)
        parts += [self.adapter.project(t) for t in (selection.append,) if t is not None]
        merged = len(parts) > 1
        layout = VisualLayout(keep, *(0 if t is None else t.shape[1] for t in (selection.prepend, selection.append)))
        return torch.cat(parts, dim=1), (None if merged else keep), keep, layout

    # -- LLM stages ------------------------------------------------------------------------------------------------
    def _make_hook(self, index: int):
        def hook(module, args, kwargs):
            state = self._state
            if state is None:
                return None
            return self._on_layer(index, state, args, kwargs)

        return hook

    def _on_layer(self, index: int, state: _State, args: tuple, kwargs: dict):
        hidden = args[0] if args else kwargs["hidden_states"]
        if index == 0:
            state.decoding = hidden.shape[1] == 1 and state.prefilled
            if not state.decoding:
                state.first_pass = not state.prefilled
                state.prefilled = True
                state.extra = hidden.shape[1] - state.prompt_len
                state.gathered = None
                if state.extra < 0:
                    raise RuntimeError(f"sequence of {hidden.shape[1]} tokens is shorter than the {state.prompt_len}-token prompt")
        if state.decoding:
            return self._on_decode(index, state, args, kwargs)
        if index == 0 and state.first_pass:
            state.input_embeds = hidden
        if index in state.plan.llm:
            if state.first_pass:
                self._select_at(index, state, hidden, kwargs)
            hidden, kwargs = self._apply_cut(index, state, hidden, kwargs)
            args = (hidden, *args[1:]) if args else args
            if not args:
                kwargs["hidden_states"] = hidden
        elif state.gathered is not None:
            kwargs.update(state.gathered)
        if state.first_pass:
            state.tokens_per_layer[index] = hidden.shape[1] - state.num_text
        return args, kwargs

    def _select_at(self, index: int, state: _State, hidden: torch.Tensor, kwargs: dict) -> None:
        if not self.count_select_flops:
            return self._select_at_uncounted(index, state, hidden, kwargs)
        # nested inside the caller's counter: both see these FLOPs, this one tells them apart from the decoder's
        with FlopCounterMode(display=False) as counter:
            self._select_at_uncounted(index, state, hidden, kwargs)
        state.select_flops += int(counter.get_total_flops())

    def _select_at_uncounted(self, index: int, state: _State, hidden: torch.Tensor, kwargs: dict) -> None:
        keep = state.plan.llm[index]
        visual_index = state.visual_index
        bsz, length = hidden.shape[:2]
        start = time.perf_counter()
        recycled = None
        if keep < visual_index.shape[1]:
            # kwargs hold the model's full-length RoPE tables; index them to the tokens still present. Positions
            # come from the LLM input (3 rows on M-RoPE), since Qwen's decoder layers get position_ids=None.
            cos, sin = kwargs["position_embeddings"]
            renumbered = [c for k, c in sorted(state.cuts.items()) if k < index and c.positions is not None]
            if renumbered:  # the tokens' positions are those of the last renumbering cut, not the prompt's
                positions = renumbered[-1].positions
                cos, sin = self._rope(hidden, positions)
            else:
                positions = _gather_last(state.llm_inputs.position_ids, state.abs_index)
                cos, sin = _gather_rows(cos, state.abs_index), _gather_rows(sin, state.abs_index)
            view = LayerView(
                layer=index,
                hidden_states=hidden,
                visual_index=visual_index,
                valid=state.valid,
                position_ids=positions,
                captured=state.captured.get(index - 1),
                generators=state.generators,
                position_embeddings=(cos, sin),
                input_embeds=state.input_embeds,
                input_visual_index=state.llm_inputs.visual_index,
                decoder_layer=self.adapter.decoder_layers()[index],
            )
            selection = self.method.select_llm(view, keep)
            if selection.prepend is not None or (selection.append is not None and not self._renumber()):
                raise SelectionError(
                    f"{self.method.name} layer {index}: an LLM stage can only append merged tokens (after the kept visual "
                    "tokens) with llm_position_policy='renumber', since they have no original position; or return a "
                    "RecycledSelection that gives kept slots new hidden states"
                )
            selection.validate(bsz, visual_index.shape[1], keep, f"{self.method.name} layer {index}")
            chosen = selection.keep.long()
            merged = selection.append
            if isinstance(selection, RecycledSelection) and selection.values is not None:
                replace = selection.replace if selection.replace is not None else torch.ones_like(chosen, dtype=torch.bool)
                if selection.values.shape[:2] != chosen.shape or replace.shape != chosen.shape:
                    raise SelectionError(f"{self.method.name} layer {index}: values must be (B, k, D) and replace (B, k) like keep")
                recycled = (selection.values.detach(), replace.bool())
        else:
            chosen = torch.arange(keep, device=hidden.device).expand(bsz, -1)
            merged = None
        state.kept[f"layer{index}"] = chosen
        retain = torch.ones(bsz, length, dtype=torch.bool, device=hidden.device)
        retain.scatter_(1, visual_index, False)
        retain.scatter_(1, visual_index.gather(1, chosen), True)
        keep_local = torch.arange(length, device=hidden.device).expand(bsz, -1)[retain].view(bsz, -1)
        if merged is None or merged.shape[1] == 0:
            state.cuts[index] = _Cut(keep_local, state.abs_index.gather(1, keep_local), length)
            state.abs_index = state.cuts[index].keep_abs
            state.visual_index = torch.searchsorted(keep_local, visual_index.gather(1, chosen))
            state.valid = state.valid.gather(1, keep_local)
        else:
            self._insert_merged(index, state, keep_local, visual_index.gather(1, chosen), merged.detach(), length)
        if recycled is not None:
            cut = state.cuts[index]
            cut.visual_local, (cut.values, cut.replace) = state.visual_index, recycled
        if self._renumber():
            cut = state.cuts[index]
            cut.positions = (state.valid.long().cumsum(1) - 1).clamp(min=0)
            cut.shift = state.valid.sum(1, keepdim=True) - state.llm_inputs.attention_mask.sum(1, keepdim=True)
        _sync(hidden.device)
        state.select_s += time.perf_counter() - start

    def _renumber(self) -> bool:
        return getattr(self.method, "llm_position_policy", "original") == "renumber"

    def _insert_merged(self, index: int, state: _State, keep_local: torch.Tensor, kept_visual: torch.Tensor,
                       merged: torch.Tensor, length: int) -> None:
        """Cut with ``merged`` (B, c, D) tokens placed right after the last kept visual token (SparseVLM's
        recycled tokens). They count as visual tokens from here on; for the mask and the decode-time key
        index they borrow the prompt index of the last kept visual token (valid, and the causal order among
        the borrowed entries is restored in ``_apply_cut``)."""
        bsz, count = merged.shape[0], merged.shape[1]
        device = keep_local.device
        last = kept_visual.max(dim=1, keepdim=True).values  # (B, 1) local position of the last kept visual token
        keys = torch.cat([keep_local.float(), last.float() + (torch.arange(count, device=device) + 1) / (count + 1)], 1)
        order = keys.argsort(dim=1)
        codes = torch.cat([keep_local, -1 - torch.arange(count, device=device).expand(bsz, -1)], 1).gather(1, order)
        is_visual = torch.zeros(bsz, length, dtype=torch.bool, device=device).scatter(1, kept_visual, True).gather(1, keep_local)
        is_visual = torch.cat([is_visual, torch.ones(bsz, count, dtype=torch.bool, device=device)], 1).gather(1, order)
        absolute = torch.cat([state.abs_index.gather(1, keep_local), state.abs_index.gather(1, last).expand(-1, count)], 1).gather(1, order)
        valid = torch.cat([state.valid.gather(1, keep_local), torch.ones(bsz, count, dtype=torch.bool, device=device)], 1).gather(1, order)
        cut = _Cut(codes, absolute, length, merged=merged)
        state.cuts[index] = cut
        state.abs_index = absolute
        state.visual_index = torch.arange(codes.shape[1], device=device).expand(bsz, -1)[is_visual].view(bsz, -1)
        state.valid = valid

    def _rope(self, hidden: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rotary = getattr(self, "_rotary", None)
        if rotary is None:
            found = [m for name, m in self.adapter.model.named_modules() if name.endswith("rotary_emb") and "vision" not in name]
            if not found:
                raise PruneBenchError(f"{self.method.name}: per-layer renumbering needs the LLM's rotary embedding module; none found")
            rotary = self._rotary = found[0]
        return rotary(hidden, positions)

    def _apply_cut(self, index: int, state: _State, hidden: torch.Tensor, kwargs: dict) -> tuple[torch.Tensor, dict]:
        cut = state.cuts[index]
        local, absolute = cut.keep_local, cut.keep_abs
        if cut.merged is not None:  # merged tokens live after the input rows (and after any generated rows)
            hidden = torch.cat([hidden, cut.merged.to(hidden.dtype)], 1)
            local = torch.where(local < 0, cut.in_len + state.extra - 1 - local, local)
        if state.extra:
            bsz = local.shape[0]
            local = torch.cat([local, torch.arange(cut.in_len, cut.in_len + state.extra, device=local.device).expand(bsz, -1)], 1)
            absolute = torch.cat([absolute, torch.arange(state.prompt_len, state.prompt_len + state.extra, device=local.device).expand(bsz, -1)], 1)
        hidden = _gather_rows(hidden, local)
        if cut.values is not None:  # recycled tokens take their new hidden states (same in replays: stored)
            slots = cut.visual_local[..., None].expand(-1, -1, hidden.shape[-1])
            new = torch.where(cut.replace[..., None], cut.values.to(hidden.dtype), hidden.gather(1, slots))
            hidden = hidden.scatter(1, slots, new)
        gathered: dict[str, Any] = {}
        if cut.positions is not None:  # renumbered: 0..n'-1 over the valid prompt tokens, then generated ones
            positions = cut.positions
            if state.extra:
                positions = torch.cat([positions, positions[:, -1:] + 1 + torch.arange(state.extra, device=positions.device)], 1)
            gathered["position_embeddings"] = self._rope(hidden, positions)
            gathered["position_ids"] = positions
        else:
            cos, sin = kwargs["position_embeddings"]
            gathered["position_embeddings"] = (_gather_rows(cos, absolute), _gather_rows(sin, absolute))
            if kwargs.get("position_ids") is not None:
                gathered["position_ids"] = _gather_last(kwargs["position_ids"], absolute)
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.dim() == 4:
            # every layer receives the model's original (full-length) mask: index it in prompt coordinates
            mask = _expand_batch(mask, absolute.shape[0])
            mask = mask.gather(2, absolute[:, None, :, None].expand(-1, mask.shape[1], -1, mask.shape[3]))
            mask = mask.gather(3, absolute[:, None, None, :].expand(-1, mask.shape[1], mask.shape[2], -1))
            if any(c.merged is not None for k, c in state.cuts.items() if k <= index):
                # merged tokens share a borrowed prompt index: restore causality in the new order
                causal = torch.ones(mask.shape[-2], mask.shape[-1], dtype=torch.bool, device=mask.device).tril()
                mask = mask & causal if mask.dtype == torch.bool else mask.masked_fill(~causal, torch.finfo(mask.dtype).min)
            gathered["attention_mask"] = mask
        state.gathered = gathered
        kwargs.update(gathered)
        return hidden, kwargs

    def _on_decode(self, index: int, state: _State, args: tuple, kwargs: dict):
        first_cut = min(state.plan.llm) if state.plan.llm else None
        if first_cut is None or index < first_cut:
            return None
        cut_layer = max(k for k in state.plan.llm if k <= index)
        cut = state.cuts[cut_layer]
        if cut.shift is not None:
            # renumbered layers: the new token sits at this layer's own cache length (SparseVLM v1/v1.5)
            if kwargs.get("position_ids") is None:
                raise PruneBenchError(f"{self.method.name}: per-layer renumbering needs the decoder layers' position_ids, "
                                      f"which {self.adapter.family} does not pass; use original positions")
            hidden = args[0] if args else kwargs["hidden_states"]
            positions = kwargs["position_ids"] + cut.shift
            kwargs["position_ids"] = positions
            kwargs["position_embeddings"] = self._rope(hidden, positions)
        mask = kwargs.get("attention_mask")
        if not (isinstance(mask, torch.Tensor) and mask.dim() == 4):
            return args, kwargs
        keep_abs = cut.keep_abs
        kv_len = mask.shape[-1]
        bsz = keep_abs.shape[0]
        index_kv = torch.cat([keep_abs, torch.arange(state.prompt_len, kv_len, device=keep_abs.device).expand(bsz, -1)], 1)
        mask = _expand_batch(mask, bsz)
        kwargs["attention_mask"] = mask.gather(3, index_kv[:, None, None, :].expand(-1, mask.shape[1], mask.shape[2], -1))
        return args, kwargs


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


def _merge_groups(outs: list[tuple[list[int], GenerationOutput]], batch: int, pad_id: int) -> GenerationOutput:
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


def _gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B|1, L, D) gathered along dim 1 with index (B, L')."""
    x = _expand_batch(x, index.shape[0])
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


def _gather_last(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Position ids (B, L) or (R, B, L) gathered along the last dim with index (B, L')."""
    if x.dim() == 2:
        return _expand_batch(x, index.shape[0]).gather(1, index)
    x = x.expand(x.shape[0], index.shape[0], x.shape[-1])
    return x.gather(2, index[None].expand(x.shape[0], -1, -1))


def _expand_batch(x: torch.Tensor, batch: int) -> torch.Tensor:
    return x.expand(batch, *x.shape[1:]) if x.shape[0] == 1 and batch > 1 else x


def _store(target: dict[int, Captured], layer: int):
    def callback(cap: Captured) -> None:
        target.setdefault(layer, cap)

    return callback


def _cache_after_prefill(cache: Any, steps: int) -> tuple[list[int], int]:
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
        total += int(round(per_token * prefill))
    return lengths, total
