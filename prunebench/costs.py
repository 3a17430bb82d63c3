"""One cost model for every method: prefill FLOPs and KV-cache bytes, analytic, and the record of a measured count.

Measured counts come from :func:`prunebench.engine.flops.measure_prefill_flops` (one pruned prefill under
``torch.utils.flop_counter.FlopCounterMode``), returned as a :class:`FlopCount` beside the analytic counts below.
On CPU, SDPA dispatches to ``aten._scaled_dot_product_flash_attention_for_cpu``, for which torch 2.13's
``torch.utils.flop_counter`` has no formula (it counts 0); importing this module registers the standard SDPA
formula for it (an addition to torch's formula table, nothing in transformers is patched).

Analytic (FLOP = 2 x MAC, full n x n attention, causality ignored: the same convention FlopCounterMode uses)
    decoder layer with n tokens, hidden d, h query heads of size hd, kv key/value heads, FFN width m:
        2 * (2*n*d*h*hd  +  2*n*d*kv*hd  +  2*n^2*h*hd  +  F*n*d*m)       F = 3 FFN matrices for SwiGLU
    which for hd = d/h is 2 * (2nd^2 + 2nd^2 * kv/h + 2n^2 d + 3ndm). ``n`` is each layer's *measured* token
    count (text + visual), so in-LLM methods (FastV) are costed per layer. ``lm_head``: 2*d*V per sequence
    (``generate`` computes logits at the last position only).
    CLIP ViT: patch conv 2*P*(3*p^2)*D, every encoder layer that runs 2*(4*N*D^2 + 2*N^2*D + 2*N*D*M) with N = P + 1
    (the layers up to the feature layer under the default ``vision_stop="feature"``: 23 of CLIP-L's 24 for LLaVA),
    projector 2*T*(D*d + d*d) for the T projected tokens (LLaVA's 2-layer MLP).
    KV cache after prefill: sum over layers of cached tokens * 2 (K and V) * kv * hd * bytes per element.

Full-size models: :func:`meta_prefill_flops` counts a config built on the ``meta`` device (no weights) and is
checked against the analytic formula for LLaVA-1.5-7B in ``tests/test_costs.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, flop_registry, register_flop_formula, sdpa_flop_count

from prunebench.adapters.base import LLMShape

TERA = 1e12


def _register_cpu_sdpa_formula() -> None:
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is None or op in flop_registry:
        return

    @register_flop_formula(op)
    def _cpu_sdpa(query, key, value, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query, key, value)


_register_cpu_sdpa_formula()


# -- analytic -------------------------------------------------------------------------------------------------
def decoder_layer_flops(shape: LLMShape, n: int) -> int:
    """FLOPs of one decoder layer's prefill over ``n`` tokens (one sequence)."""
    d, h, kv, hd, m = shape.hidden_size, shape.num_heads, shape.num_kv_heads, shape.head_dim, shape.intermediate_size
    macs = 2 * n * d * h * hd + 2 * n * d * kv * hd + 2 * n * n * h * hd + shape.ffn_matrices * n * d * m
    return 2 * macs


def decoder_flops(shape: LLMShape, tokens_per_layer: Sequence[int]) -> int:
    """Decoder prefill FLOPs given the total tokens (text + visual) each layer processes."""
    if len(tokens_per_layer) != shape.num_layers:
        raise ValueError(f"expected {shape.num_layers} per-layer token counts, got {len(tokens_per_layer)}")
    return sum(decoder_layer_flops(shape, n) for n in tokens_per_layer)


def lm_head_flops(shape: LLMShape, positions: int = 1) -> int:
    return 2 * shape.hidden_size * shape.vocab_size * positions


def llm_prefill_flops(shape: LLMShape, visual_per_layer: Sequence[int], text_tokens: int, logits_positions: int = 1) -> int:
    """Decoder + lm_head FLOPs of one sequence's prefill from its *visual* tokens per layer and its text tokens."""
    return decoder_flops(shape, [text_tokens + v for v in visual_per_layer]) + lm_head_flops(shape, logits_positions)


@dataclass(frozen=True)
class VisionShape:
    """CLIP ViT + LLaVA projector dimensions (LLaVA-1.5 family)."""

    num_layers: int
    hidden_size: int
    intermediate_size: int
    patch_size: int
    num_patches: int
    num_channels: int = 3
    has_cls: bool = True
    projector_out: int = 0  # LLM hidden size
    projector_in: int = 0  # 0 = hidden_size

    @classmethod
    def from_llava_config(cls, config: Any) -> VisionShape:
        vc = config.vision_config
        layers = config.vision_feature_layer
        proj_in = vc.hidden_size * (len(layers) if isinstance(layers, (list, tuple)) else 1)
        return cls(
            num_layers=vc.num_hidden_layers,
            hidden_size=vc.hidden_size,
            intermediate_size=vc.intermediate_size,
            patch_size=vc.patch_size,
            num_patches=(vc.image_size // vc.patch_size) ** 2,
            num_channels=getattr(vc, "num_channels", 3),
            projector_out=config.text_config.hidden_size,
            projector_in=proj_in,
        )


def vision_flops(shape: VisionShape, projected_tokens: int | None = None, layers_run: int | None = None) -> int:
    """ViT + projector for ``projected_tokens`` tokens (one image). ``layers_run``: the encoder layers the tower runs
    (``ModelAdapter.vision_layers_run``: up to the feature layer under ``vision_stop="feature"``); None: all."""
    p, d, m = shape.num_patches, shape.hidden_size, shape.intermediate_size
    n = p + int(shape.has_cls)
    conv = 2 * p * shape.num_channels * shape.patch_size**2 * d
    count = shape.num_layers if layers_run is None else layers_run
    if not 0 <= count <= shape.num_layers:
        raise ValueError(f"layers_run must be within 0..{shape.num_layers}, got {layers_run}")
    layers = count * 2 * (4 * n * d * d + 2 * n * n * d + 2 * n * d * m)
    tokens = p if projected_tokens is None else projected_tokens
    d_in, d_out = shape.projector_in or d, shape.projector_out
    projector = 2 * tokens * (d_in * d_out + d_out * d_out)
    return conv + layers + projector


def kv_cache_bytes(shape: LLMShape, kv_lengths: Sequence[int], bytes_per_element: int, batch: int = 1) -> int:
    """Bytes of K and V cached after prefill, given the tokens each layer caches."""
    return sum(2 * length * shape.num_kv_heads * shape.head_dim * bytes_per_element for length in kv_lengths) * batch


# -- measured ---------------------------------------------------------------------------------------------------
@dataclass
class FlopCount:
    """FLOPs of one sequence's prefill (``generate`` up to the first token), measured and analytic."""

    measured_total: int
    measured_vision: int
    measured_llm: int
    analytic_vision: int | None  # None: no analytic formula for this family's vision side
    analytic_llm: int
    tokens_per_layer: list[int]  # visual tokens per decoder layer (measured)
    text_tokens: int
    measured_select_llm: int = 0  # in-LLM selection (scores, gathering): part of measured_llm, not of the formula

    @property
    def measured_decoder(self) -> int:
        """The LLM's own prefill FLOPs (measured_llm without the method's in-LLM selection steps)."""
        return self.measured_llm - self.measured_select_llm

    @property
    def analytic_total(self) -> int | None:
        return None if self.analytic_vision is None else self.analytic_vision + self.analytic_llm

    @property
    def llm_rel_diff(self) -> float:
        return abs(self.measured_decoder - self.analytic_llm) / max(self.analytic_llm, 1)

    def as_record(self) -> dict[str, Any]:
        """The ``flops`` field of a result record (TFLOPs per sample)."""
        total = self.analytic_total
        return {
            "measured_tflops": self.measured_total / TERA,
            "analytic_tflops": None if total is None else total / TERA,
            "vision_tflops": None if self.analytic_vision is None else self.analytic_vision / TERA,
            "llm_measured_tflops": self.measured_llm / TERA,
            "select_llm_tflops": self.measured_select_llm / TERA,
            "llm_analytic_tflops": self.analytic_llm / TERA,
            "vision_measured_tflops": self.measured_vision / TERA,
            "llm_rel_diff": self.llm_rel_diff,
            "tokens_per_layer": list(self.tokens_per_layer),
            "text_tokens": self.text_tokens,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def meta_prefill_flops(config: Any, num_tokens: int, model_cls: type | None = None) -> int:
    """Decoder prefill FLOPs of a full-size VLM config counted on the ``meta`` device (no weights allocated).

    The LLM is run on ``inputs_embeds`` with ``use_cache=True``: with neither a cache nor a 2-D mask,
    transformers 5.x's ``masking_utils._preprocess_mask_arguments`` calls ``find_packed_sequence_indices``, whose
    data-dependent branch cannot be evaluated on meta tensors; an empty DynamicCache skips it. Nothing is patched.
    Returns the FLOPs of ``language_model`` (decoder layers; no lm_head) for one sequence of ``num_tokens``.
    """
    if model_cls is None:
        from transformers import LlavaForConditionalGeneration as model_cls
    with torch.device("meta"):
        model = model_cls(config)
    llm = model.model.language_model
    hidden = config.text_config.hidden_size
    embeds = torch.empty(1, num_tokens, hidden, device="meta", dtype=next(llm.parameters()).dtype)
    with FlopCounterMode(display=False, depth=None) as counter, torch.no_grad():
        llm(inputs_embeds=embeds, use_cache=True)
    return int(counter.get_total_flops())


def llava_7b_config() -> Any:
    """The LLaVA-1.5-7B architecture (CLIP ViT-L/14-336 + Vicuna-7B), built locally (no download)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    return LlavaConfig(
        vision_config=CLIPVisionConfig(
            image_size=336, patch_size=14, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, projection_dim=768
        ),
        text_config=LlamaConfig(
            vocab_size=32064,
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
            max_position_embeddings=4096,
        ),
        image_token_id=32000,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )


def llm_shape_of(config: Any) -> LLMShape:
    cfg = getattr(config, "text_config", config)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return LLMShape(
        cfg.num_hidden_layers,
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.num_attention_heads,
        cfg.num_key_value_heads or cfg.num_attention_heads,
        head_dim,
        cfg.vocab_size,
    )
