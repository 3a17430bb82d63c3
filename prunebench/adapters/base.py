"""Model adapters: what differs between VLM families, behind one small interface.

An adapter knows how to turn samples into model inputs, how to run the vision tower and expose its signals
as a :class:`~prunebench.views.VisionView`, how to project visual features, and how to assemble the LLM input
sequence with a shortened visual span. The engine (:mod:`prunebench.engine`) does the rest identically for
every family.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from PIL import Image
from torch import nn

from prunebench.views import VisionView


@dataclass
class Sample:
    """One request: an image and a question (``id`` seeds per-sample randomness)."""

    id: str
    question: str
    image: Image.Image | None = None
    answer: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Batch:
    """Preprocessed model inputs for a list of samples (left-padded)."""

    samples: list[Sample]
    inputs: dict[str, torch.Tensor]

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
    position_ids: torch.Tensor
    visual_index: torch.Tensor  # (B, n) positions of the visual tokens in this sequence


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
    """Base class; see :class:`prunebench.adapters.llava.LlavaAdapter` for the reference implementation."""

    family: str = ""

    def __init__(self, model: nn.Module, processor: Any, name: str = ""):
        self.model = model
        self.processor = processor
        self.name = name or getattr(model.config, "_name_or_path", "") or type(model).__name__

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

    # -- data ----------------------------------------------------------------------------------------------
    def prepare(self, samples: Sequence[Sample]) -> Batch:
        raise NotImplementedError

    def encode(self, batch: Batch, capture_layers: Sequence[int] = ()) -> VisionView:
        raise NotImplementedError

    def project(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def assemble(self, batch: Batch, visual: torch.Tensor, kept: torch.Tensor | None, policy: str) -> LLMInputs:
        """Build the LLM input with ``visual`` (B, n, D_llm) in place of the image span.

        ``kept``: (B, n) indices of the original visual tokens the rows of ``visual`` are (None when
        ``visual`` holds merged tokens, which only the compact position policy can place).
        """
        raise NotImplementedError

    def stock_generate(self, batch: Batch, **generate_kwargs: Any) -> torch.Tensor:
        """New tokens from the unhooked model's own ``generate`` (the conformance kit's reference)."""
        raise NotImplementedError

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
        }
