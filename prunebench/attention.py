"""Attention signals from captured queries and keys, without eager attention.

prunebench registers one extra attention function per base implementation (``prunebench_sdpa`` wraps
``sdpa``, ``prunebench_eager`` wraps the model's eager function, ...) through transformers' public
``AttentionInterface`` / ``AttentionMaskInterface``. While a pruning run is active, the model's sub-configs
point to the wrapper; the wrapper hands the post-RoPE queries and keys of the few modules a method asked
for to a sink and then calls the original kernel unchanged. Every layer therefore keeps SDPA (or
FlashAttention); only the rows a method needs are ever turned into probabilities, here, in fp32.

Nothing in transformers is patched: the wrapper is selected per model instance through its config and the
previous implementation is restored when the run ends.
"""

from __future__ import annotations

import contextlib
import sys
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

_PREFIX = "prunebench_"
# module -> callback receiving a Captured; consulted by the wrapper on every call (weak: no leaks)
_REQUESTS: weakref.WeakKeyDictionary[nn.Module, Callable[[Captured], None]] = weakref.WeakKeyDictionary()


@dataclass
class Captured:
    """Queries and keys one attention module fed to its kernel during prefill."""

    query: torch.Tensor  # (B, H, Lq, d), after RoPE
    key: torch.Tensor  # (B, H_kv, Lk, d), after RoPE, before repeat_kv
    mask: torch.Tensor | None  # the mask the kernel received: bool (True = attend) or additive float, or None
    scaling: float
    causal: bool

    @property
    def num_heads(self) -> int:
        return self.query.shape[1]

    def keys(self) -> torch.Tensor:
        """Keys repeated to the query heads (GQA), (B, H, Lk, d)."""
        groups = self.query.shape[1] // self.key.shape[1]
        return self.key.repeat_interleave(groups, dim=1) if groups > 1 else self.key

    def logits(self, rows: torch.Tensor) -> torch.Tensor:
        """Masked attention logits of query rows ``rows`` (B, r) over all keys, (B, H, r, Lk), fp32."""
        batch, heads, _, dim = self.query.shape
        index = rows[:, None, :, None].expand(batch, heads, rows.shape[1], dim)
        query, keys = self.query.gather(2, index).float(), self.keys().float()
        # One matmul per sample, so a sample's scores are the same bits whatever else is in the batch: a batched
        # matmul over the kernel's strided key view takes another CPU path at batch 1 than at batch > 1, and the
        # last-bit differences flipped VisPruner's near-tied [CLS] ranks (tests/test_batch_invariance.py).
        logits = torch.stack([torch.matmul(query[b], keys[b].transpose(-1, -2)) for b in range(batch)]) * self.scaling
        return logits + self._row_bias(rows, logits.shape[-1], logits.device)

    def probabilities(self, rows: torch.Tensor) -> torch.Tensor:
        """Softmax attention of query rows ``rows`` (B, r): (B, H, r, Lk), fp32, exactly the kernel's mask."""
        return torch.softmax(self.logits(rows), dim=-1)

    def received(self, chunk_elements: int = 1 << 22) -> torch.Tensor:
        """Attention each key receives, averaged over heads and over all query rows: (B, Lk).

        Computed one sample at a time in query chunks of at most ``chunk_elements`` probabilities (16 MB in fp32),
        sized by the head and key counts only, so no (Lq, Lk) matrix of all heads is ever held at once and a
        sample's sums (their chunking, hence their rounding) do not depend on the other samples of the batch.
        """
        batch, heads, length, _ = self.query.shape
        chunk = max(1, chunk_elements // (heads * self.key.shape[2]))
        total = torch.zeros(batch, self.key.shape[2], device=self.query.device)
        for b in range(batch):
            one = self.sample(b)
            for start in range(0, length, chunk):
                rows = torch.arange(start, min(start + chunk, length), device=self.query.device)[None]
                total[b] += one.probabilities(rows).mean(1).sum(1)[0]
        return total / length

    def sample(self, b: int) -> Captured:
        """The capture of sample ``b`` alone (a batch of one; a mask broadcast over the batch stays as it is)."""
        mask = self.mask
        if mask is not None and mask.shape[0] > 1:
            mask = mask[b : b + 1]
        return Captured(self.query[b : b + 1], self.key[b : b + 1], mask, self.scaling, self.causal)

    def _row_bias(self, rows: torch.Tensor, num_keys: int, device: torch.device) -> torch.Tensor:
        """Additive bias (B, 1, r, Lk) of query rows ``rows`` as the kernel masked them.

        The kernel may get a 4-D mask (sdpa, eager: bool or additive, per query row), a 2-D (B, Lk) key-padding
        mask (FlashAttention: True/1 = real token; causality comes from the module's ``is_causal``, and with a
        sliding window the mask covers the last Lk keys) or None (no padding).
        """
        neg = torch.finfo(torch.float32).min
        mask = self.mask
        if mask is not None and mask.dim() == 4:
            if mask.shape[0] == 1 and rows.shape[0] > 1:
                mask = mask.expand(rows.shape[0], *mask.shape[1:])
            mask = mask[:, :1].gather(2, rows[:, None, :, None].expand(-1, 1, -1, mask.shape[-1]))[..., :num_keys]
            if mask.dtype == torch.bool:
                return torch.zeros(mask.shape, device=device).masked_fill(~mask, neg)
            return mask.float().clamp(min=neg)
        if mask is not None and mask.dim() != 2:
            raise ValueError(f"attention mask of shape {tuple(mask.shape)}: expected (B, 1|H, Lq, Lk), (B, Lk) or None")
        if mask is None and not self.causal:
            return torch.zeros(1, 1, 1, 1, device=device)
        allowed = torch.ones(rows.shape[0], 1, rows.shape[1], num_keys, dtype=torch.bool, device=device)
        if mask is not None:
            allowed = allowed & mask[:, -num_keys:].bool().to(device)[:, None, None, :]
        if self.causal:
            offset = num_keys - self.query.shape[2]  # keys already in the cache precede the queries
            keys = torch.arange(num_keys, device=device)
            allowed = allowed & (keys[None, None, None, :] <= (rows[:, None, :, None] + offset))
        return torch.zeros(allowed.shape, device=device).masked_fill(~allowed, neg)


def _base_function(base: str, module: nn.Module) -> Callable:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if base == "eager":
        return sys.modules[type(module).__module__].eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS[base]


def _make_wrapper(base: str) -> Callable:
    def attention(module, query, key, value, attention_mask, *args, **kwargs):
        callback = _REQUESTS.get(module)
        if callback is not None and query.shape[2] > 1:
            scaling = kwargs.get("scaling")
            if scaling is None:
                scaling = query.shape[-1] ** -0.5
            causal = bool(getattr(module, "is_causal", False))
            callback(Captured(query.detach(), key.detach(), attention_mask, float(scaling), causal))
        return _base_function(base, module)(module, query, key, value, attention_mask, *args, **kwargs)

    attention.__name__ = f"{_PREFIX}{base}"
    return attention


def _ensure_registered(base: str) -> str:
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, eager_mask
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

    name = f"{_PREFIX}{base}"
    if name not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(name, _make_wrapper(base))
        # A custom attention name without a mask function silently disables masking: transformers 5.x's
        # masking_utils._preprocess_mask_arguments returns no mask for a name not in ALL_MASK_ATTENTION_FUNCTIONS.
        mask_fn = eager_mask if base == "eager" else ALL_MASK_ATTENTION_FUNCTIONS[base]
        AttentionMaskInterface.register(name, mask_fn)
    return name


def _configs(model: nn.Module) -> Iterator[tuple[str, object]]:
    yield "", model.config
    for key in getattr(model.config, "sub_configs", {}):
        sub = getattr(model.config, key, None)
        if sub is not None:
            yield key, sub


@contextlib.contextmanager
def attention_probe(model: nn.Module) -> Iterator[None]:
    """Route the model's attention through the capturing wrapper of its own implementation; restore after."""
    original = {key: cfg._attn_implementation for key, cfg in _configs(model)}
    wrapped = {}
    for key, impl in original.items():
        base = impl or "eager"
        if base.startswith(_PREFIX):  # nested use: already probed
            wrapped[key] = base
            continue
        wrapped[key] = _ensure_registered(base)
    _set(model, wrapped)
    try:
        yield
    finally:
        _set(model, original)


def _set(model: nn.Module, implementations: dict[str, str]) -> None:
    top = implementations.get("", None)
    request = {k: v for k, v in implementations.items() if k}
    if top is not None:
        request[""] = top
    model.set_attn_implementation(request)


@contextlib.contextmanager
def capture(modules: dict[nn.Module, Callable[[Captured], None]]) -> Iterator[None]:
    """Ask the wrapper to hand the prefill queries/keys of ``modules`` to their callbacks."""
    for module, callback in modules.items():
        _REQUESTS[module] = callback
    try:
        yield
    finally:
        for module in modules:
            _REQUESTS.pop(module, None)


def active_requests() -> int:
    """Number of modules with a pending capture request (hygiene checks)."""
    return len(_REQUESTS)
