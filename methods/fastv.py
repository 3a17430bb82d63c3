"""FastV: prune image tokens inside the LLM by the attention they receive at layer K-1."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prunebench.bases import ScoredLLMPruner
from prunebench.registry import register_method
from prunebench.views import LayerView


@register_method("fastv")
@dataclass
class FastV(ScoredLLMPruner):
    """FastV (Chen et al., "An Image is Worth 1/2 Tokens After Layer 2", ECCV 2024, arXiv 2403.06764).

    Algorithm (as the public code does it, not the paper's prose: ``pkunlp-icler/FastV`` @d165972,
    ``modeling_llama.py`` ``LlamaModel.forward``; the HF port ``fastv_forward`` does the same):
      1. layers 0..K-1 see every token; take layer K-1's attention probabilities;
      2. score each image token by the attention of the **last prompt token** to it, mean over heads;
      3. keep the top ``keep`` image tokens in original order, with their **original position ids**;
         layers K.. see (and cache) only those.

    ``query="mean"`` selects the paper's wording instead (mean attention received from every query row);
    issues #14/#44/#48 of pkunlp-icler/FastV discuss the mismatch. The image span is located from the image
    tokens, not hard-coded (the original scripts' system span of 36 tokens is off by one). Deviations: the
    softmax row is computed in fp32 from captured q/k (the original mean of fp16 probabilities can flip
    near-ties), every sample of a batch is scored on its own (the original reads batch element 0), and the
    kept set is chosen once at prefill and kept in the KV cache (the HF/KV-cache port, not the no-cache
    in-place variant that re-selects at every generated token); equal scores keep the lower index (the
    original's ``topk`` leaves exact ties to the kernel).

    On Qwen2.5-VL: FastV reads LLM attention, not the ViT's, so nothing replaces [CLS] attention; the same
    last-token rule runs on the ``<|image_pad|>``/``<|video_pad|>`` span and kept tokens keep their original
    3-D M-RoPE positions (the authors' Qwen-VL port, branch ``qwenvl-dev`` @dcd30ce, keeps the same rule).
    On LLaVA-NeXT, AnyRes newline tokens are never candidates.
    """

    layer: int = 2
    query: str = "last"

    signals = ("LLM attention of layer K-1 (last prompt token)",)
    paper = "Chen et al., ECCV 2024 (arXiv 2403.06764)"
    citation = "chen2024fastv"

    def __post_init__(self) -> None:
        if self.query not in ("last", "mean"):
            raise ValueError(f"fastv query must be 'last' (code) or 'mean' (paper), got {self.query!r}")

    def score(self, view: LayerView) -> torch.Tensor:
        if self.query == "last":
            rows = view.last_index
        else:
            rows = torch.arange(view.hidden_states.shape[1], device=view.hidden_states.device).expand(view.batch_size, -1)
        return view.attention_to_visual(rows).mean(1)  # mean over query rows of the head-mean
