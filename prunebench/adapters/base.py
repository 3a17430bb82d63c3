"""Model adapters: what differs between VLM families, behind one small interface.

An adapter knows how to turn samples into model inputs, how to run the vision tower and expose its signals
as a :class:`~prunebench.views.VisionView`, how to project visual features, and how to assemble the LLM input
sequence with a shortened visual span. The engine (:mod:`prunebench.engine`) does the rest identically for
every family.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image
from torch import nn

from prunebench.attention import Captured, capture
from prunebench.core import PruneBenchError
from prunebench.views import Instruction, VisionView

# --budget-scope values: the budget covers the whole visual input, or each of its units (crops / frames)
WHOLE_SCOPES = ("image", "video")
UNIT_SCOPES = ("crop", "frame")
# how far the vision encoder runs: up to the layer the features are read from (and the deepest layer a method
# captures), as serving engines do (vLLM builds LLaVA's CLIP with only the layers up to ``vision_feature_layer``),
# or every layer, as the stock ``get_image_features`` does (same features; the unused last layers cost time)
VISION_STOPS = ("feature", "full")


@dataclass
class Sample:
    """One request: an image **or** a video and a question (``id`` seeds per-sample randomness).

    ``video``: the frames, already sampled (Video-LLaVA uses 8 uniformly spaced frames; Qwen2.5-VL any even
    count); ``meta["fps"]``, the rate of the frames given (default 2.0), or ``meta["second_per_grid"]`` gives
    Qwen2.5-VL's temporal M-RoPE spacing (see its adapter).
    """

    id: str
    question: str
    image: Image.Image | None = None
    answer: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    video: list[Image.Image] | None = None

    @property
    def modality(self) -> str:
        if self.video is not None and self.image is not None:
            raise PruneBenchError(f"sample {self.id!r} has both an image and a video; give one visual input per sample")
        return "video" if self.video is not None else "image"


@dataclass
class Batch:
    """Preprocessed model inputs for a list of samples (left-padded)."""

    samples: list[Sample]
    inputs: dict[str, torch.Tensor]  # exactly what the model's own forward/generate takes
    meta: dict[str, Any] = field(default_factory=dict)  # adapter-private layout facts (not model inputs)

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.samples]

    @property
    def input_ids(self) -> torch.Tensor:
        return self.inputs["input_ids"]

    @property
    def attention_mask(self) -> torch.Tensor:
        return self.inputs["attention_mask"]


@dataclass
class LLMInputs:
    """The LLM's prefill input after the vision stage."""

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor  # (B, L), or (3, B, L) M-RoPE positions (Qwen2.5-VL)
    visual_index: torch.Tensor  # (B, n) positions of the visual tokens (the pruning candidates) in this sequence
    # tokens of the visual span that are not candidates and not in the budget, per sample (LLaVA-NeXT's newlines)
    extra_visual_tokens: int = 0


@dataclass
class VisualLayout:
    """How the rows of the vision stage's output are made: ``prepend`` merged rows, then the kept candidates
    ``keep`` (B, k) (original indices, ascending), then ``append`` merged rows."""

    keep: torch.Tensor
    prepend: int = 0
    append: int = 0

    @property
    def merged(self) -> bool:
        return bool(self.prepend or self.append)


@dataclass(frozen=True)
class LLMShape:
    """What the cost model needs to know about the language model."""

    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    ffn_matrices: int = 3  # SwiGLU (Llama, Qwen2) has three FFN matrices


class ModelAdapter:
    """Base class; see :class:`prunebench.adapters.llava.LlavaAdapter` for the reference implementation.

    ``budget_scopes``: the ``--budget-scope`` values this family accepts. ``image``/``video``: one budget for
    all visual tokens of a sample; ``crop``/``frame``: the budget applies per unit (crop of an AnyRes image,
    frame of a video) and the engine multiplies it by ``VisionView.num_units``.
    """

    family: str = ""
    budget_scopes: tuple[str, ...] = ("image",)
    mrope: bool = False  # position ids are (3, B, L) M-RoPE rows (Qwen2.5-VL): per-layer renumbering is undefined
    dynamic_resolution: bool = False  # the processor makes as many tokens as the image's size asks (Qwen-VL): resizing prunes

    model_class: str = ""  # the stock transformers class this adapter drives

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        dtype: torch.dtype | str = "auto",
        device: str = "cpu",
        attn_implementation: str = "sdpa",
        trust_remote_code: bool = False,
        **options: Any,
    ) -> ModelAdapter:
        """Load a checkpoint (hub id or local folder) into the stock class with its own processor.

        Weights load only from safetensors (nothing is unpickled); ``trust_remote_code`` stays off unless asked.
        """
        import transformers

        model = (
            getattr(transformers, cls.model_class)
            .from_pretrained(
                name_or_path,
                dtype=dtype,
                attn_implementation=attn_implementation,
                trust_remote_code=trust_remote_code,
                use_safetensors=True,
            )
            .to(device)
        )
        model.eval()
        return cls(model, cls.load_processor(name_or_path, trust_remote_code), name=str(name_or_path), **options)

    @classmethod
    def load_processor(cls, name_or_path: str, trust_remote_code: bool = False) -> Any:
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)

    def __init__(self, model: nn.Module, processor: Any, name: str = "", vision_stop: str = "feature"):
        if vision_stop not in VISION_STOPS:
            raise PruneBenchError(
                f"vision_stop must be one of {', '.join(VISION_STOPS)} (run the vision encoder up to the feature layer, "
                f"or every layer as stock transformers does), got {vision_stop!r}"
            )
        self.model = model
        self.processor = processor
        self.name = name or getattr(model.config, "_name_or_path", "") or type(model).__name__
        self.vision_stop = vision_stop

    # -- structure -----------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def decoder_layers(self) -> nn.ModuleList:
        raise NotImplementedError

    def decoder_attention(self, layer: int) -> nn.Module:
        return self.decoder_layers()[layer].self_attn

    def final_norm(self) -> nn.Module | None:
        """The LLM's final norm (after its last decoder layer), or None where the adapter does not expose it; DART
        measures duplication in its output space (``LayerView.final_norm``)."""
        return None

    def vision_attention(self, layer: int) -> nn.Module:
        raise NotImplementedError

    @property
    def llm_shape(self) -> LLMShape:
        raise NotImplementedError

    @property
    def num_vision_layers(self) -> int:
        raise NotImplementedError

    @property
    def feature_layer(self) -> int:
        """0-based ViT encoder layer whose output feeds the projector."""
        raise NotImplementedError

    def vision_layers_run(self, capture_layers: Sequence[int] = ()) -> int:
        """How many ViT encoder layers :meth:`encode` runs: every layer under ``vision_stop="full"``; under
        ``"feature"`` the layers up to the deepest of the feature layer and the ``capture_layers`` (a method that
        reads a later layer's queries/keys, e.g. PruMerge+'s last layer, still gets it)."""
        total = self.num_vision_layers
        if self.vision_stop == "full":
            return total
        return min(total, 1 + max([self.feature_layer, *(layer % total for layer in capture_layers)]))

    # -- data ----------------------------------------------------------------------------------------------
    def prepare(self, samples: Sequence[Sample]) -> Batch:
        raise NotImplementedError

    def encode(self, batch: Batch, capture_layers: Sequence[int] = ()) -> VisionView:
        raise NotImplementedError

    def project(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def instruction(self, batch: Batch) -> Instruction:
        """Each sample's instruction for ``VisionView.instruction``: its question (``Sample.question``, without the
        chat template), with this model's tokenizer and LLM input-embedding layer (tokenized and embedded lazily,
        per sample, so padding never enters)."""
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        return Instruction([s.question for s in batch.samples], tokenizer, self.model.get_input_embeddings(), self.device)

    def assemble(self, batch: Batch, visual: torch.Tensor, kept: torch.Tensor | None, policy: str) -> LLMInputs:
        """Build the LLM input with ``visual`` (B, n, D_llm) in place of the image span.

        ``kept``: (B, n) indices of the original visual tokens the rows of ``visual`` are (None when
        ``visual`` holds merged tokens, which only the compact position policy can place).
        """
        raise NotImplementedError

    def stock_generate(self, batch: Batch, **generate_kwargs: Any) -> torch.Tensor:
        """New tokens from the unhooked model's own ``generate`` (the conformance kit's reference)."""
        raise NotImplementedError

    def group_key(self, sample: Sample) -> Hashable:
        """Samples with equal keys have equally many visual tokens in the same layout and can share a batch.

        The engine splits a batch whose samples have different keys into groups, runs each group and restores
        the order (AnyRes and dynamic-resolution families give each image size its own token count).
        """
        return None

    # -- attention references for the conformance kit -----------------------------------------------------------
    def run_vision(self, batch: Batch) -> Any:
        """Run the vision encoder(s) of ``batch`` the way :meth:`encode` does (no capture, no selection)."""
        raise NotImplementedError

    def vision_attention_modules(self, batch: Batch, layer: int) -> list[nn.Module]:
        """The attention modules of ViT layer ``layer`` that :meth:`run_vision` calls for ``batch``."""
        return [self.vision_attention(layer)]

    def captured_vision_attentions(self, batch: Batch, layers: Sequence[int]) -> dict[int, list[Captured]]:
        """q/k captured at ViT ``layers`` through the prunebench wrapper, one entry per kernel call."""
        from prunebench.attention import attention_probe

        found: dict[int, list[Captured]] = {layer: [] for layer in layers}
        requests = {m: found[layer].append for layer in layers for m in self.vision_attention_modules(batch, layer)}
        with torch.inference_mode(), attention_probe(self.model), capture(requests):
            self.run_vision(batch)
        return found

    def eager_vision_attentions(self, batch: Batch, layers: Sequence[int]) -> dict[int, list[torch.Tensor]]:
        """The probabilities the model's own **eager** kernel computes at ViT ``layers``, one per kernel call.

        Recorded from the return value of the modelling file's ``eager_attention_forward`` (registered for
        this call only), independent of prunebench's capture path: the conformance kit's reference.
        """
        found: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
        wanted = {m: layer for layer in layers for m in self.vision_attention_modules(batch, layer)}
        with torch.inference_mode(), _eager_recorder(self.model, wanted, found):
            self.run_vision(batch)
        return found

    def decode(self, tokens: torch.Tensor) -> list[str]:
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        return [t.strip() for t in tokenizer.batch_decode(tokens, skip_special_tokens=True)]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "class": type(self.model).__name__,
            "dtype": str(self.dtype).replace("torch.", ""),
            "device": str(self.device),
            "attn_implementation": self.model.config._attn_implementation,
            "vision_stop": self.vision_stop,
        }


def encoder_prefix(tower: nn.Module, pixel_values: torch.Tensor, count: int) -> list[torch.Tensor]:
    """``hidden_states[0..count]`` of a CLIP / SigLIP vision tower, running only its first ``count`` encoder layers.

    The tower's own modules are called in the order of its ``forward`` (``embeddings``, CLIP's ``pre_layrnorm``, then
    each encoder layer with no attention mask, as the encoder calls them), so every state is bit-identical to the
    full run's. Nothing is modified: no module list is shortened (transformers installs its output-recording hooks
    once, on the layers present at the first call, so a temporarily shortened list would leave the later layers
    unrecorded for good), no hook is added.
    """
    body = getattr(tower, "vision_model", tower)
    hidden = body.embeddings(pixel_values)
    pre_norm = getattr(body, "pre_layrnorm", None)
    if pre_norm is not None:
        hidden = pre_norm(hidden)
    states = [hidden]
    for layer in body.encoder.layers[:count]:
        hidden = layer(hidden, None)
        states.append(hidden)
    return states


def hidden_index(index: int, num_layers: int) -> int:
    """``hidden_states`` index ``index`` (negative counts from the full run's end) as a non-negative index."""
    return index % (num_layers + 1)


@contextlib.contextmanager
def _eager_recorder(model: nn.Module, wanted: dict[nn.Module, int], found: dict[int, list[torch.Tensor]]) -> Iterator[None]:
    """Run every sub-model with eager attention, recording the softmax of the modules in ``wanted``."""
    from transformers.masking_utils import AttentionMaskInterface, eager_mask
    from transformers.modeling_utils import AttentionInterface

    def recording(module, query, key, value, attention_mask, *args, **kwargs):
        eager = sys.modules[type(module).__module__].eager_attention_forward
        out, weights = eager(module, query, key, value, attention_mask, *args, **kwargs)
        if module in wanted and query.shape[2] > 1:
            found[wanted[module]].append(weights.detach().float())
        return out, weights

    AttentionInterface.register("prunebench_eager_reference", recording)
    AttentionMaskInterface.register("prunebench_eager_reference", eager_mask)
    configs = {
        "": model.config,
        **{k: getattr(model.config, k) for k in getattr(model.config, "sub_configs", {}) if getattr(model.config, k, None) is not None},
    }
    original = {k: cfg._attn_implementation for k, cfg in configs.items()}
    model.set_attn_implementation({k: "prunebench_eager_reference" for k in configs})
    try:
        yield
    finally:
        model.set_attn_implementation(original)


def splice_span(
    embed: nn.Module,
    input_ids: torch.Tensor,
    mask: torch.Tensor,
    placeholder: torch.Tensor,
    span: torch.Tensor,
    span_source: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Replace each sample's contiguous placeholder span by ``span`` (B, n, D), vectorised over the batch.

    ``placeholder``: (B, L) bool, the same count S per sample, contiguous. ``span_source``: (B, n) index in
    0..S-1 of the old span slot each new slot stands for (its position under the ``original`` policy), or None.
    Returns (embeds, new 2-D mask, old_index (B, L'): the old sequence position each new position stands for,
    span start (B, 1)); merged slots without a source map to the first slot of the span.
    """
    bsz, length = input_ids.shape
    size = int(placeholder[0].sum())
    start = placeholder.long().argmax(dim=1, keepdim=True)
    n = span.shape[1]
    new_len = length - size + n
    j = torch.arange(new_len, device=input_ids.device).expand(bsz, -1)
    in_span = (j >= start) & (j < start + n)
    source = torch.where(j < start, j, j + (size - n)).clamp(max=length - 1)
    text = embed(input_ids.gather(1, source))
    slot = (j - start).clamp(0, max(n - 1, 0))
    vis = span.to(text.dtype).gather(1, slot[..., None].expand(-1, -1, span.shape[-1]))
    embeds = torch.where(in_span[..., None], vis, text)
    new_mask = torch.where(in_span, torch.ones_like(mask[:, :1]), mask.gather(1, source))
    span_old = start + (span_source.gather(1, slot) if span_source is not None else torch.zeros_like(slot))
    old_index = torch.where(in_span, span_old, source)
    return embeds, new_mask, old_index, start
