"""``Pruner``: runs one method at one budget on one model instance, the same way for every method.

``Pruner(adapter, method, budget)`` is a context manager bound to one model instance. On entry it routes the
model's attention through the capturing wrapper (:mod:`prunebench.attention`) and registers a forward
pre-hook on each decoder layer; on exit (also on an exception) it removes every hook and restores the
attention implementation, leaving the model exactly as it was.

One ``generate`` call:

1. the adapter runs the vision tower, capturing q/k only at the ViT layers the method asked for;
2. ``method.plan`` maps the budget to per-stage keep counts, checked against the budget contract;
3. vision stage: ``method.select_vision`` picks tokens (plus merged ones); only those are projected;
4. the adapter assembles the shortened LLM input (embeddings, 2-D mask, position ids per policy);
5. ``model.generate`` runs; the decoder layers' pre-hooks make the LLM-stage cuts
   (:class:`prunebench.engine.cuts.LLMStages`). Renumbering positions per layer is refused on M-RoPE families
   (Qwen2.5-VL): 0..n'-1 would turn the kept image tokens' 3-D (t, h, w) positions into 1-D ones, and kept
   tokens keep the positions computed on the unpruned sequence there (as the Qwen2.5-VL ports of HiPrune,
   github.com/Danielement321/HiPrune @ 6e83a12, and DART, github.com/ZichenWen1/DART @ 5a19452, do);
6. after ``generate`` the measured per-layer visual tokens and KV lengths are compared with the plan (the
   run-time token contract, :mod:`prunebench.engine.outputs`).

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
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from prunebench.adapters.base import UNIT_SCOPES, WHOLE_SCOPES, Batch, ModelAdapter, VisualLayout
from prunebench.attention import attention_probe, capture
from prunebench.core import BudgetMode, Plan, PlanContext, PruneBenchError, PruningMethod, check_budget, check_plan_meets_budget
from prunebench.engine.cuts import LLMStages, gather_rows, renumbers, sync
from prunebench.engine.outputs import GenerationOutput, SampleGroup, Stats, cache_after_prefill, merge_groups
from prunebench.views import sample_generators


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
        if renumbers(method) and getattr(adapter, "mrope", False):
            raise PruneBenchError(
                f"{method.name} renumbers positions per layer (llm_position_policy='renumber'), which is not defined for "
                f"{adapter.family}'s 3-D M-RoPE positions: kept tokens keep the (t, h, w) positions of the unpruned "
                "sequence. Use the method's original-positions setting (llm_position_policy='original'; for SparseVLM "
                "v1.5: positions='original' with recycle='inplace' or 'none')"
            )
        self.adapter = adapter
        self.method = method
        self.budget = budget
        self.budget_mode = budget_mode
        self.seed = seed
        self.budget_scope = budget_scope
        # prunebench.engine.flops.measure_prefill_flops: count the in-LLM selections' FLOPs apart
        self.count_select_flops = count_select_flops
        self._num_layers = len(adapter.decoder_layers())
        self._stack: contextlib.ExitStack | None = None
        self._active: LLMStages | None = None  # the group whose forward passes the hooks act on (None: hooks idle)
        self._finished: list[tuple[list[int], LLMStages]] = []  # the last generate's groups, for recompute

    # -- lifecycle -----------------------------------------------------------------------------------------
    def __enter__(self) -> Pruner:
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

    def __exit__(self, *exc: Any) -> None:
        self._active = None
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    def _make_hook(self, index: int):
        def hook(module, args, kwargs):
            stages = self._active
            if stages is None:
                return None
            return stages.on_layer(index, args, kwargs)

        return hook

    def _vision_capture_layers(self) -> tuple[int, ...]:
        """ViT layers whose queries/keys the method's vision stage reads (none without a vision stage)."""
        method, adapter = self.method, self.adapter
        return tuple(method.vision_layers(adapter.num_vision_layers, adapter.feature_layer)) if "vision" in method.stages else ()

    def _captures_attention(self) -> bool:
        """Whether any stage reads queries/keys: only then is the model's attention routed through the capturing
        wrapper, so a method without attention signals (random, the unpruned baseline) runs the stock kernel path."""
        return "llm" in self.method.stages or bool(self._vision_capture_layers())

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
        order: dict[Any, list[int]] = {}
        for i, sample in enumerate(batch.samples):
            order.setdefault(self.adapter.group_key(sample), []).append(i)
        if len(order) == 1:
            indices = list(range(len(batch.samples)))
            out, stages = self._generate_group(batch, max_new_tokens, output_logits, **generate_kwargs)
            out.groups = [SampleGroup(indices, out.stats, out.llm_inputs)]
            self._finished = [(indices, stages)]
            return out
        outs, finished = [], []
        for indices in order.values():
            sub = self.adapter.prepare([batch.samples[i] for i in indices])
            out, stages = self._generate_group(sub, max_new_tokens, output_logits, **dict(generate_kwargs))
            outs.append((indices, out))
            finished.append((indices, stages))
        self._finished = finished
        return merge_groups(outs, len(batch.samples), self._pad_id())

    def _pad_id(self) -> int:
        config = self.adapter.model.generation_config
        pad = config.pad_token_id if config.pad_token_id is not None else config.eos_token_id
        pad = pad[0] if isinstance(pad, (list, tuple)) else pad
        return int(pad if pad is not None else 0)

    def _generate_group(self, batch: Batch, max_new_tokens: int, output_logits: bool, **generate_kwargs: Any) -> tuple[GenerationOutput, LLMStages]:
        """One batch of samples with the same visual layout (see the module docstring)."""
        adapter, method = self.adapter, self.method
        device = adapter.device
        timings: dict[str, float] = {}

        sync(device)
        start = time.perf_counter()
        view = adapter.encode(batch, self._vision_capture_layers())
        view.generators = sample_generators(self.seed, batch.ids)
        view.model_name = adapter.name
        sync(device)
        vision_end = time.perf_counter()
        timings["vision_ms"] = (vision_end - start) * 1e3

        plan = self.plan_for(view.num_tokens, getattr(view, "num_units", 1))
        select_start = time.perf_counter()
        visual, kept, vision_keep, layout = self._vision_stage(view, plan)
        sync(device)
        vision_select_s = time.perf_counter() - select_start
        llm_inputs = adapter.assemble(batch, visual, kept, self._position_policy(), layout=layout)

        stages = LLMStages(adapter, method, plan, llm_inputs, view.generators, self._num_layers, self.count_select_flops)
        if vision_keep is not None:
            stages.kept["vision"] = vision_keep
        requests = {adapter.decoder_attention(layer): stages.store_capture(layer) for layer in method.llm_signal_layers(plan)}

        clock = _StepClock(device)
        criteria = StoppingCriteriaList([clock, *generate_kwargs.pop("stopping_criteria", [])])
        self._active = stages
        try:
            with capture(requests):
                sync(device)
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
            stages.captured.clear()
            self._active = None

        timings["select_ms"] = (vision_select_s + stages.select_s) * 1e3
        timings["select_vision_ms"] = vision_select_s * 1e3
        timings["select_llm_ms"] = stages.select_s * 1e3  # inside the prefill window below
        # everything between the vision encoder and generate() that is not selection: planning, assembly of the
        # LLM inputs, hook setup; so vision + select_vision + assemble + prefill is exactly the time to first token
        timings["assemble_ms"] = (gen_start - vision_end - vision_select_s) * 1e3
        if clock.times:
            timings["prefill_ms"] = (clock.times[0] - gen_start) * 1e3
            timings["ttft_ms"] = (clock.times[0] - start) * 1e3
            timings["decode_ms_per_token"] = ((clock.times[-1] - clock.times[0]) / (len(clock.times) - 1) * 1e3) if len(clock.times) > 1 else 0.0
            timings["generate_ms"] = (clock.times[-1] - gen_start) * 1e3
            timings["total_ms"] = (clock.times[-1] - start) * 1e3
        stats = Stats(
            plan=plan,
            tokens_per_layer=list(stages.tokens_per_layer),
            timings_ms=timings,
            kept=dict(stages.kept),
            prompt_tokens=stages.prompt_len,
            text_tokens=stages.num_text,
            budget_scope=self.budget_scope,
            units=getattr(view, "num_units", 1),
            extra_visual_tokens=llm_inputs.extra_visual_tokens,
            select_llm_flops=stages.select_flops,
        )
        cache = getattr(out, "past_key_values", None)
        if cache is not None:
            stats.kv_lengths, stats.kv_bytes = cache_after_prefill(cache, out.sequences.shape[1])
        stats.check_contract()
        result = GenerationOutput(out.sequences, adapter.decode(out.sequences), stats, getattr(out, "logits", None), llm_inputs)
        return result, stages

    @torch.inference_mode()
    def recompute(self, generated: torch.Tensor) -> torch.Tensor:
        """Greedy logits of the last ``generate`` recomputed without a KV cache on the same kept tokens.

        Each step runs the whole sequence (prompt + tokens so far) through the hooked model, replaying the
        recorded cuts; returns (steps, B, V). The conformance kit compares it with cached generation.
        A batch that ran as several groups is recomputed group by group.
        """
        if not self._finished:
            raise RuntimeError("call generate() first")
        if len(self._finished) == 1:
            return self._replay(self._finished[0][1], generated)
        result = None
        for indices, stages in self._finished:
            index = torch.tensor(indices, device=generated.device)
            part = self._replay(stages, generated.index_select(0, index))
            if result is None:
                result = part.new_full((part.shape[0], generated.shape[0], part.shape[2]), float("nan"))
            result[:, index] = part
        return result

    def _replay(self, stages: LLMStages, generated: torch.Tensor) -> torch.Tensor:
        """One group's no-cache logits, step by step; its prefill ran, so every pass is a replay of its cuts."""
        llm = stages.llm_inputs
        embed = self.adapter.model.get_input_embeddings()
        bsz = generated.shape[0]
        all_logits = []
        for step in range(generated.shape[1]):
            new = generated[:, :step]
            embeds = torch.cat([llm.inputs_embeds, embed(new).to(llm.inputs_embeds.dtype)], dim=1)
            mask = torch.cat([llm.attention_mask, torch.ones(bsz, step, dtype=llm.attention_mask.dtype, device=new.device)], dim=1)
            last = llm.position_ids[..., -1:]
            positions = torch.cat([llm.position_ids, last + 1 + torch.arange(step, device=new.device)], dim=-1)
            self._active = stages
            try:
                out = self.adapter.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False)
            finally:
                self._active = None
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
            visual = gather_rows(view.projected, keep)
        else:
            visual = self.adapter.project(gather_rows(view.features, keep))
        parts = [self.adapter.project(t) for t in (selection.prepend,) if t is not None]
        parts.append(visual)
        parts += [self.adapter.project(t) for t in (selection.append,) if t is not None]
        merged = len(parts) > 1
        layout = VisualLayout(keep, *(0 if t is None else t.shape[1] for t in (selection.prepend, selection.append)))
        return torch.cat(parts, dim=1), (None if merged else keep), keep, layout


class _StepClock(StoppingCriteria):
    """Records the time each generated token becomes available (never stops generation)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.times: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        sync(self.device)
        self.times.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
