"""Qwen3-VL on the stock ``transformers`` ``Qwen3VLForConditionalGeneration``: images.

Qwen3-VL (Qwen Team, "Qwen3-VL Technical Report", arXiv 2511.21631) keeps Qwen2.5-VL's LLM-side layout (2x2
merged tokens, ``<|image_pad|>`` spans, 3-D M-RoPE), so this adapter subclasses
:class:`~prunebench.adapters.qwen2_5_vl.Qwen2_5_VLAdapter` and changes what differs:

* **Vision tower**: 16 px patches (one LLM token per 32 x 32 pixels), learned position embeddings
  interpolated to the grid plus 2-D RoPE, and **no windows**: every block attends within its whole image, so the
  patches are already in raster order of merge units. ``VisionView.features`` (B, N, 4 x D_vit) are the merger's
  input after ``merger.norm`` (a LayerNorm per patch), the four patches of a unit concatenated; the "projector"
  is ``merger.linear_fc2(act(merger.linear_fc1(.)))``, so ``project(features)`` is the stock merged embedding.
* **No [CLS]**: ``VisionView.importance()`` is the attention each merged token **receives** at the last ViT block
  (the block whose output feeds the merger), head-mean, averaged over all queries of its image, then over the 4
  patches of its unit: the rule the Qwen2.5-VL adapter applies at its last full-attention block, the only kind
  of block Qwen3-VL has. ``received_attention(layer)`` / ``keys(layer)`` work for any block.
* **Positions**: the model's own ``get_rope_index`` on the **unpruned** sequence (with ``mm_token_type_ids``);
  kept tokens keep their (t, h, w) positions, for every method, as on Qwen2.5-VL. The interleaved M-RoPE layout
  (``mrope_interleaved``, frequencies cycling t/h/w) is the rotary module's business: it turns the same 3-row
  positions into (cos, sin), so pruning needs nothing more.
* **DeepStack** (Meng et al., NeurIPS 2024, arXiv 2406.04334, as Qwen3-VL uses it): the ViT blocks
  ``deepstack_visual_indexes`` (8, 16, 24 on the 8B model) each feed a merger of their own, and the stock text
  model adds those features to the hidden states of the visual tokens after LLM layers 0, 1, 2
  (``Qwen3VLTextModel._deepstack_process`` with ``visual_pos_masks`` / ``deepstack_visual_embeds``). The stock
  ``Qwen3VLModel`` builds those two arguments only when it runs the vision tower itself, i.e. never when the LLM
  gets ``inputs_embeds`` — so without this adapter's handling a pruned run would silently drop DeepStack. Here:

  1. ``encode`` keeps every DeepStack level per merged token, (B, N, D_llm), in the candidates' order
     (``batch.meta["deepstack"]``, ``Qwen3VisionView.deepstack``);
  2. ``assemble`` gathers them with the **same kept indices** as the visual tokens (``VisualLayout.keep``);
     merged rows (a method's prepended/appended merged tokens, e.g. VisionZip's contextual tokens) have no single
     source token and get **no** DeepStack residual (zeros) — a choice, recorded by ``describe()``;
  3. on every full pass over an assembled prompt (the prefill, and ``Pruner.recompute``'s replays, whose
     sequence starts with that prompt; found by its leading ``inputs_embeds``, held weakly as long as the caller
     keeps the ``LLMInputs``) forward hooks on decoder layers 0 .. len-1 add level i to the output of layer i at
     the visual tokens present — the stock ``_deepstack_process`` arithmetic (hidden + feature at the visual rows,
     other rows untouched), so keeping every token is bitwise the stock model. Decode steps get nothing, as in
     stock generation.
  4. LLM-stage cuts between two injections (FastV at K=2 on the 8B model, whose injections follow layers 0-2):
     the adapter does not see the engine's choice, so it recovers it. A pre-hook that runs before every other
     pre-hook of the layer holds the sequence entering it; a pre-hook on the layer's first norm (which runs after
     all of the layer's pre-hooks, the engine's cut included) sees the sequence the layer actually runs on. A cut
     gathers rows, so each remaining row is a bitwise copy of one entering row: they are matched by exact integer
     keys of their bit patterns and checked with ``torch.equal``; the later levels are then added at the kept
     visual tokens only. A cut that gives tokens new hidden states (SparseVLM's recycled tokens) cannot be
     followed and raises :class:`~prunebench.core.UnsupportedModel` (never a silently wrong result).

Not supported yet: **video** (Qwen3-VL separates frames by ``<t seconds>`` timestamp text, so one video is many
spans; the engine splices one span per sample) — ``prepare`` refuses it with a one-line error.
Preprocessing: the checkpoint's image processor (``Qwen2VLImageProcessor`` with 16 px patches) and tokenizer; the
chat template's single-image user turn (Qwen3-VL has no default system prompt).
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from prunebench.adapters.base import Batch, LLMInputs, Sample, VisualLayout
from prunebench.adapters.qwen2_5_vl import Qwen2_5_VLAdapter, QwenVisionView
from prunebench.attention import Captured, capture
from prunebench.core import PruneBenchError, UnsupportedModel

PROMPT = "<|im_start|>user\n<|vision_start|>{placeholder}<|vision_end|>{question}<|im_end|>\n<|im_start|>assistant\n"


@dataclass
class Qwen3VisionView(QwenVisionView):
    """:class:`QwenVisionView` plus the DeepStack features, one (B, N, D_llm) per level, in candidate order."""

    deepstack: list[torch.Tensor] = field(default_factory=list, repr=False)


@dataclass(eq=False)
class _DeepStackPass:
    """One full pass's DeepStack state: ``candidate`` (B, L) the DeepStack row of each input position (-1: not a
    visual token), ``levels`` the rows per level (B, n, D), ``rows`` (B, L') the input position of each row of the
    current sequence (after the LLM-stage cuts so far), ``entering`` the sequence entering the current layer."""

    candidate: torch.Tensor
    levels: list[torch.Tensor]
    rows: torch.Tensor
    entering: torch.Tensor | None = None


def _fingerprint(hidden: torch.Tensor) -> torch.Tensor:
    """(B, L) int64 keys of the rows' exact bit patterns (integer arithmetic: equal rows, equal keys)."""
    bits = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[hidden.element_size()]
    words = hidden.contiguous().view(bits).long()
    weights = torch.randint(1, 2**31 - 1, (words.shape[-1],), generator=torch.Generator().manual_seed(0)).to(words.device)
    return (words * weights).sum(-1)


def _match_rows(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """(B, L') index into ``before`` (B, L, D) of each row of ``after``, which must be bitwise copies of its rows
    (what an LLM-stage cut's gather makes); anything else (recycled or merged hidden states) is refused."""
    keys, found = _fingerprint(before), _fingerprint(after)
    ordered, order = keys.sort(dim=1)
    slot = torch.searchsorted(ordered, found).clamp(max=keys.shape[1] - 1)
    index = order.gather(1, slot)
    same = ordered.gather(1, slot) == found
    if not bool(same.all()) or not torch.equal(before.gather(1, index[..., None].expand(-1, -1, before.shape[-1])), after):
        raise UnsupportedModel(
            "an LLM-stage cut before Qwen3-VL's last DeepStack injection gave tokens new hidden states "
            "(recycled or merged tokens); DeepStack cannot follow them: cut after the DeepStack layers"
        )
    return index


class Qwen3VLAdapter(Qwen2_5_VLAdapter):
    family = "qwen3_vl"
    budget_scopes = ("image",)
    prompt = PROMPT

    model_class = "Qwen3VLForConditionalGeneration"  # e.g. Qwen/Qwen3-VL-8B-Instruct

    def __init__(self, model: nn.Module, processor: Any, name: str = "", preprocess: str = "hf", vision_stop: str = "feature"):
        super().__init__(model, processor, name, preprocess, vision_stop=vision_stop)  # DeepStack reads several blocks: all run
        self.deepstack_layers = len(model.config.vision_config.deepstack_visual_indexes or ())
        # (weak ref to an assembled prompt's inputs_embeds, its visual positions (B, n), DeepStack rows [(B, n, D)])
        self._deepstack_prompts: list[tuple[weakref.ref, torch.Tensor, list[torch.Tensor]]] = []
        self._pass: _DeepStackPass | None = None  # the full pass (prefill or replay) being tracked
        text_model = self._inner.language_model
        self._hooks = [text_model.register_forward_pre_hook(self._begin_pass, with_kwargs=True), text_model.register_forward_hook(self._end_pass)]
        for level in range(self.deepstack_layers):
            layer = self.decoder_layers()[level]
            self._hooks += [
                layer.register_forward_pre_hook(self._before_layer, with_kwargs=True, prepend=True),
                layer.input_layernorm.register_forward_pre_hook(self._after_cuts),
                layer.register_forward_hook(functools.partial(self._add_deepstack, level)),
            ]

    def default_importance_layer(self) -> int:
        return self.model.config.vision_config.depth - 1

    # -- data ----------------------------------------------------------------------------------------------
    def prepare(self, samples: Sequence[Sample]) -> Batch:
        videos = [s.id for s in samples if s.video is not None]
        if videos:
            raise PruneBenchError(f"samples {videos[:3]}: Qwen3-VL video (frames separated by timestamp text) is not supported yet; give images")
        return super().prepare(samples)

    def _chunk_lengths(self, grid: torch.Tensor, layer: int) -> list[int]:
        """One attention call per image (frame): no windows."""
        return torch.repeat_interleave(grid[:, 1] * grid[:, 2], grid[:, 0]).tolist()

    def encode(self, batch: Batch, capture_layers: Sequence[int] = ()) -> Qwen3VisionView:
        modality = self._modality(batch)
        pixels, grid = self._vision_inputs(batch, modality)
        visual = self._inner.visual
        layers = sorted({layer % self.num_vision_layers for layer in capture_layers} | ({self.importance_layer} if capture_layers else set()))
        captured: dict[int, list[Captured]] = {layer: [] for layer in layers}
        merger_input: list[torch.Tensor] = []
        handle = visual.merger.register_forward_hook(lambda module, args, output: merger_input.append(args[0]))
        try:
            with capture({self.vision_attention(layer): captured[layer].append for layer in layers}):
                out = visual(pixels.to(self.dtype), grid_thw=grid)
        finally:
            handle.remove()
        unit, bsz = self.merge**2, len(batch.samples)
        hidden = visual.merger.norm(merger_input[0])
        features = hidden.reshape(bsz, -1, unit * hidden.shape[-1])
        deepstack = [level.reshape(bsz, features.shape[1], -1) for level in out.deepstack_features]
        batch.meta["deepstack"] = deepstack
        batch.meta["placeholder"] = self.image_token_id
        _, h, w = (int(v) for v in grid[0])
        rows, cols = h // self.merge, w // self.merge
        return Qwen3VisionView(
            features=features,
            cls_feature=None,
            grid=(rows, cols),
            feature_layer=self.feature_layer,
            num_vision_layers=self.num_vision_layers,
            projector=self.project,
            captured=captured,
            has_cls=False,
            num_units=1,
            unit_kind="image",
            unit_of=torch.zeros(bsz, features.shape[1], dtype=torch.long, device=features.device),
            importance_layer=self.importance_layer,
            chunk_lengths={layer: self._chunk_lengths(grid, layer) for layer in layers},
            reverse=torch.arange(features.shape[1] * bsz, device=features.device),
            unit=unit,
            instruction=self.instruction(batch),
            deepstack=deepstack,
        )

    def project(self, features: torch.Tensor) -> torch.Tensor:
        merger = self._inner.visual.merger
        return merger.linear_fc2(merger.act_fn(merger.linear_fc1(features)))

    # -- DeepStack ------------------------------------------------------------------------------------------
    def assemble(self, batch: Batch, visual: torch.Tensor, kept: torch.Tensor | None, policy: str, layout: VisualLayout | None = None) -> LLMInputs:
        """The Qwen2.5-VL assembly, plus the DeepStack rows of the tokens kept (module docstring)."""
        llm = super().assemble(batch, visual, kept, policy, layout=layout)
        levels = batch.meta.get("deepstack")
        if levels is None:
            if self.deepstack_layers:
                raise PruneBenchError("assemble() needs the DeepStack features of encode(batch); call encode on this batch first")
            return llm
        if layout is None:
            layout = VisualLayout(kept if kept is not None else torch.arange(visual.shape[1], device=visual.device).expand(visual.shape[0], -1))
        keep = layout.keep
        rows = []
        for level in levels:
            gathered = level.gather(1, keep[..., None].expand(-1, -1, level.shape[-1]))
            zeros = gathered.new_zeros
            rows.append(
                torch.cat([zeros(keep.shape[0], layout.prepend, level.shape[-1]), gathered, zeros(keep.shape[0], layout.append, level.shape[-1])], dim=1)
            )
        self._deepstack_prompts = [entry for entry in self._deepstack_prompts if entry[0]() is not None]
        self._deepstack_prompts.append((weakref.ref(llm.inputs_embeds), llm.visual_index, rows))
        return llm

    def _prompt_of(self, embeds: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]] | None:
        """The assembled prompt ``embeds`` starts with (its visual positions and DeepStack rows), or None."""
        for ref, visual_index, rows in reversed(self._deepstack_prompts):
            prompt = ref()
            if prompt is None or prompt.shape[0] != embeds.shape[0] or prompt.shape[1] > embeds.shape[1]:
                continue
            if prompt is embeds or torch.equal(embeds[:, : prompt.shape[1]], prompt):
                return visual_index, rows
        return None

    def _begin_pass(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """Text-model pre-hook: a full pass over an assembled prompt starts DeepStack tracking (module docstring)."""
        self._pass = None
        embeds, cache = kwargs.get("inputs_embeds"), kwargs.get("past_key_values")
        if kwargs.get("deepstack_visual_embeds") is not None or embeds is None or not self._deepstack_prompts:
            return  # the stock path (it ran the vision tower itself) or a text-only pass
        if cache is not None and cache.get_seq_length() > 0:
            return  # a decode step: DeepStack touches the prompt's visual tokens only
        found = self._prompt_of(embeds)
        if found is None:
            return
        visual_index, levels = found
        bsz, length = embeds.shape[:2]
        candidate = torch.full((bsz, length), -1, dtype=torch.long, device=embeds.device)
        candidate.scatter_(1, visual_index, torch.arange(visual_index.shape[1], device=embeds.device).expand(bsz, -1))
        self._pass = _DeepStackPass(candidate, levels, torch.arange(length, device=embeds.device).expand(bsz, -1))

    def _end_pass(self, module: nn.Module, args: tuple, output: Any) -> None:
        self._pass = None  # decoder layers run outside a pass (a method's probe, a test) are left alone

    def _before_layer(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """Decoder-layer pre-hook, first of all: the sequence before any cut at this layer."""
        if self._pass is not None:
            self._pass.entering = args[0] if args else kwargs["hidden_states"]

    def _after_cuts(self, module: nn.Module, args: tuple) -> None:
        """Pre-hook of the layer's first norm, i.e. after every pre-hook of the layer (an LLM-stage cut included):
        if the rows changed, find which rows of the sequence before the cut they are (bitwise copies)."""
        state = self._pass
        if state is None or state.entering is None or args[0] is state.entering:
            return
        state.rows = state.rows.gather(1, _match_rows(state.entering, args[0]))
        state.entering = None

    def _add_deepstack(self, level: int, module: nn.Module, args: tuple, output: Any) -> Any:
        """Decoder-layer forward hook of layer ``level``: add DeepStack level ``level`` at the visual tokens present,
        exactly as the stock ``_deepstack_process`` (hidden + feature at visual rows; other rows untouched)."""
        state = self._pass
        if state is None:
            return None
        hidden = output[0] if isinstance(output, tuple) else output
        candidate = state.candidate.gather(1, state.rows)
        features = state.levels[level]
        added = features.gather(1, candidate.clamp(min=0)[..., None].expand(-1, -1, features.shape[-1])).to(hidden.device, hidden.dtype)
        hidden = torch.where((candidate >= 0)[..., None], hidden + added, hidden)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    def describe(self) -> dict[str, Any]:
        described = {key: value for key, value in super().describe().items() if not key.startswith("video_")}  # images only
        return {
            **described,
            "prompt": PROMPT,
            "importance": f"received attention at ViT block {self.importance_layer} (no [CLS])",
            "preprocessing": "Qwen2VLImageProcessor (16 px patches); hand-expanded pads; images only",
            "deepstack": f"{self.deepstack_layers} levels, pruned with the kept indices, followed through LLM cuts; merged tokens get none",
        }
