"""LLM-stage cuts: what the decoder layers' pre-hooks do while one group of samples generates.

For every LLM stage K of the plan, the pre-hook of decoder layer K builds a :class:`LayerView` from the hidden
states and layer K-1's captured q/k during the prefill, calls ``method.select_llm``, records the cut, and gathers
the hidden states, (cos, sin), position ids and any 4-D mask to the tokens kept. Layers >= K therefore cache only
the kept tokens, while positions stay in the unpruned prompt's coordinates, so decoding continues at the right
RoPE index. During decoding the hooks re-index a materialised mask's key axis to each layer's cached tokens.

Each forward pass through the hooked model is one of three :class:`Phase` s: the ``PREFILL`` (methods select, cuts
are recorded and applied), a ``DECODE`` step (one new token against the cache), or a ``REPLAY`` (a later full
sequence, ``Pruner.recompute`` without a cache: the recorded cuts are applied again, nothing is selected).

Two opt-ins for SparseVLM-style methods (Zhang et al., ICML 2025, arXiv 2410.04417): a ``RecycledSelection``
gives kept slots new hidden states, and a method with ``llm_position_policy = "renumber"`` gets positions
0..n'-1 after each cut (generated tokens at each layer's own valid cache length, as SparseVLM v1/v1.5 do,
github.com/Gumpest/SparseVLMs @ 8435974) and may append merged tokens after the kept visual tokens.

``LayerView.position_ids`` are the position ids of the tokens present: the LLM input's ``position_ids``
(``(3, B, L)`` M-RoPE rows on Qwen2.5-VL) gathered to them, or the last renumbering cut's. They come from the
cut state, not from the decoder layer's ``position_ids`` argument, which Qwen's text model sets to None.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from prunebench.adapters.base import LLMInputs, ModelAdapter
from prunebench.attention import Captured
from prunebench.core import Plan, PruneBenchError, PruningMethod, SelectionError
from prunebench.views import LayerView, RecycledSelection


class Phase(enum.Enum):
    """The kind of forward pass the decoder layers are in (decided at layer 0 of every pass)."""

    PREFILL = "prefill"  # the first pass over the prompt: methods select, cuts are recorded and applied
    DECODE = "decode"  # one new token against the KV cache
    REPLAY = "replay"  # a later full sequence (recompute without a cache): the recorded cuts are applied again


def renumbers(method: PruningMethod) -> bool:
    """Whether ``method`` renumbers positions 0..n'-1 after each LLM cut (``llm_position_policy="renumber"``)."""
    return getattr(method, "llm_position_policy", "original") == "renumber"


@dataclass
class Cut:
    """One LLM stage's cut, recorded during the prefill and re-applied in every replay."""

    keep_local: torch.Tensor  # (B, L_out) positions kept, in the sequence entering this layer
    keep_abs: torch.Tensor  # (B, L_out) the same tokens, in LLM-input (prompt) coordinates
    in_len: int  # prompt-part length entering this layer
    visual_local: torch.Tensor | None = None  # (B, k) kept visual tokens' positions after the cut (recycling only)
    values: torch.Tensor | None = None  # (B, k, D) new hidden states of recycled tokens
    replace: torch.Tensor | None = None  # (B, k) bool: which kept visual tokens take ``values``
    # merged tokens added at this stage (Selection.append): keep_local holds -1-m for merged token m
    merged: torch.Tensor | None = None  # (B, c, D)
    # per-layer renumbering: prompt positions 0..n'-1 after the cut; generated tokens continue at this layer's
    # own valid cache length (shift = n' - n_prompt)
    positions: torch.Tensor | None = None  # (B, L_out)
    shift: torch.Tensor | None = None  # (B, 1)


@dataclass
class Present:
    """The prompt tokens still present after the cuts made so far in the prefill, in the order the next layer
    sees them."""

    abs_index: torch.Tensor  # (B, L) their positions in the LLM input (prompt coordinates)
    visual_index: torch.Tensor  # (B, n) where the visual tokens (the candidates) are among them
    valid: torch.Tensor  # (B, L) bool: not padding


@dataclass(eq=False)
class LLMStages:
    """The LLM-stage state of one group's ``generate``: the cuts made, what they measured, and the current pass.

    ``on_layer`` is called by the pre-hook of every decoder layer while this group generates (and while
    ``Pruner.recompute`` replays it).
    """

    adapter: ModelAdapter
    method: PruningMethod
    plan: Plan
    llm_inputs: LLMInputs
    generators: list[torch.Generator]
    num_layers: int
    count_select_flops: bool = False
    present: Present = field(init=False)
    cuts: dict[int, Cut] = field(default_factory=dict)  # by decoder layer
    captured: dict[int, Captured] = field(default_factory=dict)  # q/k of the layers the method reads, this prefill
    input_embeds: torch.Tensor | None = None  # layer-0 input of the prefill (LayerView.input_embeds)
    # measured during the prefill
    tokens_per_layer: list[int] = field(init=False)
    kept: dict[str, torch.Tensor] = field(default_factory=dict)
    select_s: float = 0.0
    select_flops: int = 0
    # the current pass
    phase: Phase | None = None  # None until the first pass starts
    extra: int = 0  # tokens after the prompt in a full pass (generated tokens a replay recomputes)
    gathered: dict[str, Any] | None = None  # the last cut's position embeddings / ids / mask, for the layers after it
    _rotary: torch.nn.Module | None = field(default=None, init=False, repr=False)  # found on first use

    def __post_init__(self) -> None:
        llm = self.llm_inputs
        bsz, prompt_len = llm.inputs_embeds.shape[:2]
        abs_index = torch.arange(prompt_len, device=llm.inputs_embeds.device).expand(bsz, -1)
        self.present = Present(abs_index, llm.visual_index, llm.attention_mask.bool())
        self.tokens_per_layer = [0] * self.num_layers

    @property
    def prompt_len(self) -> int:
        return self.llm_inputs.inputs_embeds.shape[1]

    @property
    def num_text(self) -> int:
        """Prompt tokens that are not pruning candidates (text, padding, extra visual tokens)."""
        return self.prompt_len - self.llm_inputs.visual_index.shape[1]

    def store_capture(self, layer: int) -> Callable[[Captured], None]:
        """A capture callback keeping the first q/k of decoder layer ``layer`` (the prefill's)."""

        def callback(cap: Captured) -> None:
            self.captured.setdefault(layer, cap)

        return callback

    # -- the hook ----------------------------------------------------------------------------------------------
    def on_layer(self, index: int, args: tuple, kwargs: dict):
        """The pre-hook of decoder layer ``index``: the (args, kwargs) the layer runs on, or None to leave them."""
        hidden = args[0] if args else kwargs["hidden_states"]
        if index == 0:
            self._begin_pass(hidden)
        if self.phase is Phase.DECODE:
            return self._on_decode(index, args, kwargs)
        prefill = self.phase is Phase.PREFILL
        if index == 0 and prefill:
            self.input_embeds = hidden
        if index in self.plan.llm:
            if prefill:
                self._select(index, hidden, kwargs)
            hidden, kwargs = self._apply_cut(index, hidden, kwargs)
            args = (hidden, *args[1:]) if args else args
            if not args:
                kwargs["hidden_states"] = hidden
        elif self.gathered is not None:
            kwargs.update(self.gathered)
        if prefill:
            self.tokens_per_layer[index] = hidden.shape[1] - self.num_text
        return args, kwargs

    def _begin_pass(self, hidden: torch.Tensor) -> None:
        """Layer 0: one token after a first pass is a decode step; any other sequence is the prefill (the first
        pass) or a replay of it."""
        if self.phase is not None and hidden.shape[1] == 1:
            self.phase = Phase.DECODE
            return
        self.phase = Phase.PREFILL if self.phase is None else Phase.REPLAY
        self.extra = hidden.shape[1] - self.prompt_len
        self.gathered = None
        if self.extra < 0:
            raise RuntimeError(f"sequence of {hidden.shape[1]} tokens is shorter than the {self.prompt_len}-token prompt")

    # -- selecting (prefill) -------------------------------------------------------------------------------------
    def _select(self, index: int, hidden: torch.Tensor, kwargs: dict) -> None:
        if not self.count_select_flops:
            return self._select_uncounted(index, hidden, kwargs)
        # nested inside the caller's counter: both see these FLOPs, this one tells them apart from the decoder's
        with FlopCounterMode(display=False) as counter:
            self._select_uncounted(index, hidden, kwargs)
        self.select_flops += int(counter.get_total_flops())

    def _select_uncounted(self, index: int, hidden: torch.Tensor, kwargs: dict) -> None:
        keep = self.plan.llm[index]
        present = self.present
        visual_index = present.visual_index
        bsz, length = hidden.shape[:2]
        start = time.perf_counter()
        recycled = None
        if keep < visual_index.shape[1]:
            selection = self.method.select_llm(self._layer_view(index, hidden, kwargs), keep)
            if selection.prepend is not None or (selection.append is not None and not renumbers(self.method)):
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
        self.kept[f"layer{index}"] = chosen
        retain = torch.ones(bsz, length, dtype=torch.bool, device=hidden.device)
        retain.scatter_(1, visual_index, False)
        retain.scatter_(1, visual_index.gather(1, chosen), True)
        keep_local = torch.arange(length, device=hidden.device).expand(bsz, -1)[retain].view(bsz, -1)
        if merged is None or merged.shape[1] == 0:
            cut = Cut(keep_local, present.abs_index.gather(1, keep_local), length)
            self.present = Present(cut.keep_abs, torch.searchsorted(keep_local, visual_index.gather(1, chosen)), present.valid.gather(1, keep_local))
        else:
            cut = self._cut_with_merged(keep_local, visual_index.gather(1, chosen), merged.detach(), length)
        self.cuts[index] = cut
        if recycled is not None:
            cut.visual_local, (cut.values, cut.replace) = self.present.visual_index, recycled
        if renumbers(self.method):
            valid = self.present.valid
            cut.positions = (valid.long().cumsum(1) - 1).clamp(min=0)
            cut.shift = valid.sum(1, keepdim=True) - self.llm_inputs.attention_mask.sum(1, keepdim=True)
        sync(hidden.device)
        self.select_s += time.perf_counter() - start

    def _layer_view(self, index: int, hidden: torch.Tensor, kwargs: dict) -> LayerView:
        """What ``select_llm`` sees before layer ``index``: the tokens present, their positions and RoPE tables."""
        present = self.present
        # kwargs hold the model's full-length RoPE tables; index them to the tokens still present. Positions
        # come from the LLM input (3 rows on M-RoPE), since Qwen's decoder layers get position_ids=None.
        cos, sin = kwargs["position_embeddings"]
        renumbered = [c for k, c in sorted(self.cuts.items()) if k < index and c.positions is not None]
        if renumbered:  # the tokens' positions are those of the last renumbering cut, not the prompt's
            positions = renumbered[-1].positions
            cos, sin = self._rope(hidden, positions)
        else:
            positions = gather_last(self.llm_inputs.position_ids, present.abs_index)
            cos, sin = gather_rows(cos, present.abs_index), gather_rows(sin, present.abs_index)
        return LayerView(
            layer=index,
            hidden_states=hidden,
            visual_index=present.visual_index,
            valid=present.valid,
            position_ids=positions,
            captured=self.captured.get(index - 1),
            generators=self.generators,
            position_embeddings=(cos, sin),
            input_embeds=self.input_embeds,
            input_visual_index=self.llm_inputs.visual_index,
            final_norm=self.adapter.final_norm(),
        )

    def _cut_with_merged(self, keep_local: torch.Tensor, kept_visual: torch.Tensor, merged: torch.Tensor, length: int) -> Cut:
        """Cut with ``merged`` (B, c, D) tokens placed right after the last kept visual token (SparseVLM's
        recycled tokens). They count as visual tokens from here on; for the mask and the decode-time key
        index they borrow the prompt index of the last kept visual token (valid, and the causal order among
        the borrowed entries is restored in ``_apply_cut``)."""
        present = self.present
        bsz, count = merged.shape[0], merged.shape[1]
        device = keep_local.device
        last = kept_visual.max(dim=1, keepdim=True).values  # (B, 1) local position of the last kept visual token
        keys = torch.cat([keep_local.float(), last.float() + (torch.arange(count, device=device) + 1) / (count + 1)], 1)
        order = keys.argsort(dim=1)
        codes = torch.cat([keep_local, -1 - torch.arange(count, device=device).expand(bsz, -1)], 1).gather(1, order)
        is_visual = torch.zeros(bsz, length, dtype=torch.bool, device=device).scatter(1, kept_visual, True).gather(1, keep_local)
        is_visual = torch.cat([is_visual, torch.ones(bsz, count, dtype=torch.bool, device=device)], 1).gather(1, order)
        absolute = torch.cat([present.abs_index.gather(1, keep_local), present.abs_index.gather(1, last).expand(-1, count)], 1).gather(1, order)
        valid = torch.cat([present.valid.gather(1, keep_local), torch.ones(bsz, count, dtype=torch.bool, device=device)], 1).gather(1, order)
        self.present = Present(absolute, torch.arange(codes.shape[1], device=device).expand(bsz, -1)[is_visual].view(bsz, -1), valid)
        return Cut(codes, absolute, length, merged=merged)

    # -- applying a cut (prefill and replays) ------------------------------------------------------------------------
    def _apply_cut(self, index: int, hidden: torch.Tensor, kwargs: dict) -> tuple[torch.Tensor, dict]:
        cut, extra = self.cuts[index], self.extra
        local, absolute = cut.keep_local, cut.keep_abs
        if cut.merged is not None:  # merged tokens live after the input rows (and after any generated rows)
            hidden = torch.cat([hidden, cut.merged.to(hidden.dtype)], 1)
            local = torch.where(local < 0, cut.in_len + extra - 1 - local, local)
        if extra:
            bsz = local.shape[0]
            local = torch.cat([local, torch.arange(cut.in_len, cut.in_len + extra, device=local.device).expand(bsz, -1)], 1)
            absolute = torch.cat([absolute, torch.arange(self.prompt_len, self.prompt_len + extra, device=local.device).expand(bsz, -1)], 1)
        hidden = gather_rows(hidden, local)
        if cut.values is not None:  # recycled tokens take their new hidden states (same in replays: stored)
            slots = cut.visual_local[..., None].expand(-1, -1, hidden.shape[-1])
            new = torch.where(cut.replace[..., None], cut.values.to(hidden.dtype), hidden.gather(1, slots))
            hidden = hidden.scatter(1, slots, new)
        gathered: dict[str, Any] = {}
        if cut.positions is not None:  # renumbered: 0..n'-1 over the valid prompt tokens, then generated ones
            positions = cut.positions
            if extra:
                positions = torch.cat([positions, positions[:, -1:] + 1 + torch.arange(extra, device=positions.device)], 1)
            gathered["position_embeddings"] = self._rope(hidden, positions)
            gathered["position_ids"] = positions
        else:
            cos, sin = kwargs["position_embeddings"]
            gathered["position_embeddings"] = (gather_rows(cos, absolute), gather_rows(sin, absolute))
            if kwargs.get("position_ids") is not None:
                gathered["position_ids"] = gather_last(kwargs["position_ids"], absolute)
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.dim() == 4:
            # every layer receives the model's original (full-length) mask: index it in prompt coordinates
            mask = expand_batch(mask, absolute.shape[0])
            mask = mask.gather(2, absolute[:, None, :, None].expand(-1, mask.shape[1], -1, mask.shape[3]))
            mask = mask.gather(3, absolute[:, None, None, :].expand(-1, mask.shape[1], mask.shape[2], -1))
            if any(c.merged is not None for k, c in self.cuts.items() if k <= index):
                # merged tokens share a borrowed prompt index: restore causality in the new order
                causal = torch.ones(mask.shape[-2], mask.shape[-1], dtype=torch.bool, device=mask.device).tril()
                mask = mask & causal if mask.dtype == torch.bool else mask.masked_fill(~causal, torch.finfo(mask.dtype).min)
            gathered["attention_mask"] = mask
        self.gathered = gathered
        kwargs.update(gathered)
        return hidden, kwargs

    # -- decoding --------------------------------------------------------------------------------------------------
    def _on_decode(self, index: int, args: tuple, kwargs: dict):
        """One new token: layers after a cut get their own positions (renumbering) and the mask's key axis
        re-indexed to the tokens they cached."""
        llm = self.plan.llm
        if not llm or index < min(llm):
            return None
        cut = self.cuts[max(k for k in llm if k <= index)]
        if cut.shift is not None:
            # renumbered layers: the new token sits at this layer's own cache length (SparseVLM v1/v1.5)
            if kwargs.get("position_ids") is None:
                raise PruneBenchError(
                    f"{self.method.name}: per-layer renumbering needs the decoder layers' position_ids, "
                    f"which {self.adapter.family} does not pass; use original positions"
                )
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
        index_kv = torch.cat([keep_abs, torch.arange(self.prompt_len, kv_len, device=keep_abs.device).expand(bsz, -1)], 1)
        mask = expand_batch(mask, bsz)
        kwargs["attention_mask"] = mask.gather(3, index_kv[:, None, None, :].expand(-1, mask.shape[1], mask.shape[2], -1))
        return args, kwargs

    def _rope(self, hidden: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) of the LLM's rotary embedding at ``positions`` (renumbering only)."""
        if self._rotary is None:
            found = [m for name, m in self.adapter.model.named_modules() if name.endswith("rotary_emb") and "vision" not in name]
            if not found:
                raise PruneBenchError(f"{self.method.name}: per-layer renumbering needs the LLM's rotary embedding module; none found")
            self._rotary = found[0]
        return self._rotary(hidden, positions)


# -- tensor helpers -------------------------------------------------------------------------------------------------
def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B|1, L, D) gathered along dim 1 with index (B, L')."""
    x = expand_batch(x, index.shape[0])
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


def gather_last(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Position ids (B, L) or (R, B, L) gathered along the last dim with index (B, L')."""
    if x.dim() == 2:
        return expand_batch(x, index.shape[0]).gather(1, index)
    x = x.expand(x.shape[0], index.shape[0], x.shape[-1])
    return x.gather(2, index[None].expand(x.shape[0], -1, -1))


def expand_batch(x: torch.Tensor, batch: int) -> torch.Tensor:
    return x.expand(batch, *x.shape[1:]) if x.shape[0] == 1 and batch > 1 else x


def sync(device: torch.device) -> None:
    """Wait for the device's queued kernels (timings)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
