"""What a method's ``select`` sees: a :class:`VisionView` at the vision stage, a :class:`LayerView` in the LLM.

Signals are computed lazily and cached: a method that never asks for [CLS] attention never pays for it.
Attention signals come from queries/keys captured from the model's own kernel call (see
:mod:`prunebench.attention`), so they equal eager attention without running it.

``ranked`` and ``stable_top_k`` (= :func:`prunebench.core.top_k`) are re-exported here for the methods that
imported them from this module.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import torch

from prunebench.attention import Captured
from prunebench.core import PruneBenchError, Selection, ranked, stable_top_k

HeadReduce = Literal["mean", "sum", "none"]
__all__ = [
    "HeadReduce",
    "LayerView",
    "RecycledSelection",
    "UnitVisionView",
    "VisionView",
    "grid_positions",
    "mark_neighbours",
    "ranked",
    "ranked_per_unit",
    "sample_generators",
    "stable_top_k",
    "top_k_per_unit",
    "unit_quotas",
]


def _reduce_heads(attn: torch.Tensor, heads: HeadReduce) -> torch.Tensor:
    if heads == "mean":
        return attn.mean(1)
    if heads == "sum":
        return attn.sum(1)
    return attn


def sample_generators(seed: int, sample_ids: Sequence[str]) -> list[torch.Generator]:
    """One generator per sample, seeded from (seed, sample id): batching never changes a sample's draws."""
    gens = []
    for sid in sample_ids:
        g = torch.Generator()
        g.manual_seed((seed * 1_000_003 + zlib.crc32(str(sid).encode())) % (2**63))
        gens.append(g)
    return gens


# -- multi-unit inputs (LLaVA-NeXT crops, video frames) ---------------------------------------------------------
def unit_quotas(view: VisionView, keep: int) -> list[int] | None:
    """Tokens each unit keeps, or None for a single-unit view.

    The originals prune every crop/frame on its own with the same count (VisPruner/FasterVLM/HiPrune on
    LLaVA-NeXT, FasterVLM per video frame). Equal units get ``keep // U`` each, the remainder going to the first
    units; units of different sizes (stock AnyRes with unpadding, which no original ran) get shares
    proportional to their size by largest remainder (ties to the lower unit), never more than they hold.
    """
    units, unit_of = getattr(view, "num_units", 1), getattr(view, "unit_of", None)
    if units <= 1 or unit_of is None:
        return None
    if unit_of.shape[0] > 1 and not bool((unit_of == unit_of[:1]).all()):
        raise PruneBenchError("every sample of a batch must have the same unit layout (the engine groups samples by it)")
    sizes = torch.bincount(unit_of[0], minlength=units).tolist()
    exact = [keep * size / view.num_tokens for size in sizes]
    quotas = [int(e) for e in exact]
    by_remainder = sorted(range(units), key=lambda u: (-(exact[u] - quotas[u]), u))
    for u in by_remainder[: keep - sum(quotas)]:
        quotas[u] += 1
    return quotas


def ranked_per_unit(scores: torch.Tensor, unit_of: torch.Tensor, units: int) -> list[torch.Tensor]:
    """For each unit, its tokens (B, n_u) by descending score (stable: ties to the lower index)."""
    order = ranked(scores)
    grouped = unit_of.gather(1, order).sort(dim=-1, stable=True)
    tokens = order.gather(1, grouped.indices)
    sizes = torch.bincount(unit_of[0], minlength=units).tolist()
    return list(tokens.split(sizes, dim=1))


def top_k_per_unit(scores: torch.Tensor, unit_of: torch.Tensor, units: int, quotas: Sequence[int]) -> torch.Tensor:
    """(B, sum(quotas)) indices of each unit's ``quotas[u]`` highest scores (stable ranking, ties to the lower
    index), in original order: the per-crop / per-frame counterpart of :func:`prunebench.core.top_k`."""
    per_unit = ranked_per_unit(scores, unit_of, units)
    return torch.cat([order[:, :quota] for order, quota in zip(per_unit, quotas)], dim=1).sort(dim=-1).values


def _full_width_cls(cap: Captured) -> tuple[torch.Tensor, torch.Tensor]:
    """((B, T) softmax of the [CLS] query against all keys with the heads concatenated into one head, scaled by
    width**-0.5; (B, T, H * d) the concatenated keys), fp32, from one layer's captured q/k (no GQA in ViTs)."""
    query = cap.query[:, :, 0].float().flatten(1)  # (B, H * d)
    keys = cap.keys().float().transpose(1, 2).flatten(2)  # (B, T, H * d)
    logits = (keys @ query[..., None]).squeeze(-1) * keys.shape[-1] ** -0.5
    return torch.softmax(logits, dim=-1), keys


def grid_positions(view: VisionView) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(patch (B, N), inverse (B, U * cells), cells) of a multi-unit view: each candidate's cell on its own
    unit's ``view.grid``, and the candidate at each (unit, cell).

    A view with a ``token_map`` (tower token of each candidate, ``unit_tokens`` per unit, [CLS] first where the
    tower has one) gives exact cells, also when AnyRes unpadding removed some; without one, a unit's candidates
    are taken to be its grid cells in raster order.
    """
    bsz, num = view.features.shape[:2]
    rows, cols = view.grid
    cells = rows * cols
    device = view.features.device
    unit_of = view.unit_of
    token_map = getattr(view, "token_map", None)
    if token_map is not None:
        tokens = int(view.unit_tokens)
        patch = token_map % tokens - (1 if view.has_cls else 0)
    else:
        onehot = torch.nn.functional.one_hot(unit_of, view.num_units)
        patch = (onehot.cumsum(dim=1) * onehot).sum(-1) - 1
    patch = torch.where(patch < cells, patch, torch.full_like(patch, -1))
    inverse = torch.full((bsz, view.num_units * cells + 1), -1, dtype=torch.long, device=device)
    slot = torch.where(patch >= 0, unit_of * cells + patch, torch.full_like(patch, view.num_units * cells))
    inverse.scatter_(1, slot, torch.arange(num, device=device).expand(bsz, -1))
    return patch, inverse[:, :-1], cells


def mark_neighbours(
    anchors: torch.Tensor, patch: torch.Tensor, inverse: torch.Tensor, unit_of: torch.Tensor, cells: int, offsets: Sequence[int], clamp: bool = True
) -> torch.Tensor:
    """(B, N) bool: ``anchors`` (B, a) plus their neighbours at raster ``offsets`` on their unit's grid (HiPrune's
    buffers). ``patch`` (B, N): each candidate's cell on its unit's grid of ``cells`` cells (-1: none, e.g. a
    video frame's [CLS]); ``inverse`` (B, U * cells): the candidate at each (unit, cell) (-1: none, e.g. removed
    by AnyRes unpadding); see :func:`grid_positions`. ``clamp``: out-of-range neighbours become the first / last
    cell (HiPrune's code); otherwise they are dropped (its paper's Eq. 5), as are neighbours with no candidate."""
    bsz, num = patch.shape
    cell = patch.gather(1, anchors)
    neighbours = cell[..., None] + torch.tensor(list(offsets), device=anchors.device)  # (B, a, s)
    if clamp:
        neighbours = neighbours.clamp(0, cells - 1)
        valid = torch.ones_like(neighbours, dtype=torch.bool)
    else:
        valid = (neighbours >= 0) & (neighbours < cells)
    valid &= (cell >= 0)[..., None]
    flat = unit_of.gather(1, anchors)[..., None] * cells + neighbours.clamp(0, cells - 1)
    candidate = inverse.gather(1, flat.reshape(bsz, -1)).view_as(neighbours)
    valid &= candidate >= 0
    candidate = torch.where(valid, candidate, anchors[..., None])  # a dropped neighbour points at its anchor
    mask = torch.zeros(bsz, num, dtype=torch.bool, device=anchors.device)
    mask.scatter_(1, anchors, True)
    mask.scatter_(1, candidate.reshape(bsz, -1), True)
    return mask


@dataclass
class _SeededView:
    generators: list[torch.Generator] = field(default_factory=list, repr=False)

    def rand(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """(B, n) uniform numbers, row b drawn from sample b's own seeded generator."""
        return torch.stack([torch.rand(n, generator=g) for g in self.generators]).to(device)


@dataclass
class Instruction:
    """Each sample's instruction: the question as the sample gives it (``Sample.question``, no chat template), and
    the model's own tokenizer and LLM input-embedding layer to embed it (CDPruner's text side on models without a
    text tower). Every value is computed per sample, so a sample's embedding never depends on its batch-mates or
    on padding; nothing is tokenized or embedded until a method asks."""

    texts: list[str]
    tokenizer: Any = field(default=None, repr=False)
    embed_tokens: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)
    device: torch.device | str = "cpu"

    def token_ids(self, texts: Sequence[str] | None = None) -> list[torch.Tensor]:
        """The LLM tokenizer's ids of each text (default: the instructions), without special tokens."""
        if self.tokenizer is None:
            raise PruneBenchError("this Instruction has no tokenizer; build it with Instruction(texts, tokenizer, embed_tokens)")
        texts = self.texts if texts is None else texts
        return [torch.tensor(self.tokenizer(t, add_special_tokens=False)["input_ids"], dtype=torch.long, device=self.device) for t in texts]

    def embedding(self, texts: Sequence[str] | None = None) -> torch.Tensor:
        """(B, D_llm) fp32: the mean of the LLM's input embeddings of each text's tokens (zeros for an empty text)."""
        if self.embed_tokens is None:
            raise PruneBenchError("this Instruction has no embedding layer; build it with Instruction(texts, tokenizer, embed_tokens)")
        rows = []
        with torch.inference_mode():
            for ids in self.token_ids(texts):
                vectors = self.embed_tokens(ids[None])[0].float()
                rows.append(vectors.mean(0) if ids.numel() else vectors.new_zeros(vectors.shape[-1]))
        return torch.stack(rows)


@dataclass
class VisionView(_SeededView):
    """The vision encoder's output for a batch of images, one row per image.

    ``features``: (B, N, D_v) the pruning candidates: features of the selected ViT layer, before the projector,
    in the order they enter the LLM; [CLS] removed where the LLM never sees it (Video-LLaVA's video frames keep
    theirs, so there they are candidates; Qwen2.5-VL's candidates are 2x2 merge units, see its adapter).
    ``cls_feature``: (B, D_v) [CLS] feature of the same layer, or None for towers without one (Qwen2.5-VL).
    ``grid``: (rows, cols) of the N patches in raster order.
    ``feature_layer``: 0-based ViT encoder layer whose output ``features`` is.
    ``num_units`` / ``unit_kind`` / ``unit_of``: the input's crops ("crop", LLaVA-NeXT AnyRes), frames
    ("frame", video) or the single "image"; ``unit_of`` (B, N) says which unit each token comes from (None: all
    unit 0). With ``--budget-scope crop|frame`` the engine multiplies the budget by ``num_units``; how a method
    spreads it over the units is the method's choice (read ``unit_of`` to allocate per unit).
    ``importance_layer``: the ViT layer whose received attention :meth:`importance` uses on towers without [CLS].
    ``grid``: for multi-unit inputs, the (rows, cols) patch grid of one unit.
    ``instruction``: each sample's instruction (its question) with the tokenizer and LLM input embeddings to embed
    it (:class:`Instruction`; :meth:`instruction_embedding`), or None for a hand-built view.
    """

    features: torch.Tensor = None  # type: ignore[assignment]
    cls_feature: torch.Tensor | None = None
    grid: tuple[int, int] = (0, 0)
    feature_layer: int = -1
    num_vision_layers: int = 0
    projector: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)
    captured: dict[int, Captured] = field(default_factory=dict, repr=False)
    has_cls: bool = True
    model_name: str = ""  # the adapter's name (e.g. "toy-llava"): methods with per-model assets (LearnPruner's LPM)
    num_units: int = 1
    unit_kind: str = "image"
    unit_of: torch.Tensor | None = field(default=None, repr=False)
    importance_layer: int | None = None
    instruction: Instruction | None = field(default=None, repr=False)

    @property
    def batch_size(self) -> int:
        return self.features.shape[0]

    def instruction_embedding(self) -> torch.Tensor:
        """(B, D_llm) fp32: the mean of the LLM's input embeddings of each sample's instruction tokens (computed once)."""
        if self.instruction is None:
            raise PruneBenchError("this VisionView carries no instruction; the model adapters provide it (a hand-built view: instruction=Instruction(...))")
        if "_instruction_embedding" not in self.__dict__:
            self.__dict__["_instruction_embedding"] = self.instruction.embedding()
        return self.__dict__["_instruction_embedding"]

    @property
    def num_tokens(self) -> int:
        return self.features.shape[1]

    @property
    def adapter(self):
        """The model adapter that built this view (``projector`` is its bound ``project``), or None for a
        hand-built view. Methods with per-model assets use it to check them against the weights (LearnPruner)."""
        return getattr(self.projector, "__self__", None)

    @cached_property
    def projected(self) -> torch.Tensor:
        """(B, N, D_llm): the patch features after the multimodal projector (what enters the LLM)."""
        return self.projector(self.features)

    def _capture(self, layer: int | None) -> Captured:
        layer = self.feature_layer if layer is None else (layer % self.num_vision_layers)
        if layer not in self.captured:
            raise KeyError(f"ViT layer {layer} was not captured; the method must list it in vision_layers() (captured: {sorted(self.captured)})")
        return self.captured[layer]

    def cls_attention(self, layer: int | None = None, heads: HeadReduce = "mean") -> torch.Tensor:
        """Attention from [CLS] to each patch at ViT layer ``layer`` (default: the feature layer), fp32.

        Softmax over all keys ([CLS] included), then the patch columns: (B, N), or (B, H, N) with heads="none".
        """
        if not self.has_cls:
            raise ValueError("this vision tower has no [CLS] token; use received_attention() instead")
        cap = self._capture(layer)
        rows = torch.zeros(self.batch_size, 1, dtype=torch.long, device=cap.query.device)
        probs = cap.probabilities(rows)[:, :, 0, 1:]
        return _reduce_heads(probs, heads)

    def received_attention(self, layer: int | None = None) -> torch.Tensor:
        """Attention each patch receives at ViT layer ``layer``, mean over heads and all queries: (B, N), fp32."""
        cap = self._capture(layer)
        received = cap.received()
        return received[:, 1:] if self.has_cls else received

    def keys(self, layer: int | None = None, include_cls: bool = False) -> torch.Tensor:
        """Head-mean keys of ViT layer ``layer`` (B, N(+1), d_head): VisionZip's merging metric."""
        keys = self._capture(layer).key.mean(1)
        if self.has_cls and not include_cls:
            keys = keys[:, 1:]
        return keys

    def importance(self, heads: HeadReduce = "mean") -> torch.Tensor:
        """(B, N) the generic "how much does the encoder look at this token" signal, fp32.

        [CLS] attention at the feature layer where the tower has a [CLS] token (LLaVA-1.5/NeXT, Video-LLaVA);
        otherwise (Qwen2.5-VL) the attention each token *receives*, averaged over heads and all queries, at
        ``importance_layer`` (a full-attention block), which is what replaces [CLS] attention there. A method
        that calls it must list ``importance_layer`` (or the feature layer) in ``vision_layers``; adapters of
        towers without [CLS] capture ``importance_layer`` whenever any ViT layer is captured.
        """
        if self.has_cls:
            return self.cls_attention(heads=heads)
        received = self.received_attention(self.importance_layer)
        return received * self._capture(self.importance_layer).num_heads if heads == "sum" else received

    def grid_coords(self) -> torch.Tensor:
        """(B, N, 2) each candidate's (row, col) in its unit's ``grid`` (raster), or (-1, -1) for a candidate
        that is not a grid patch. Units are contiguous runs of ``unit_of`` (one unit: the whole view)."""
        num, cols = self.num_tokens, self.grid[1]
        position = torch.arange(num, device=self.features.device).expand(self.batch_size, -1)
        if self.unit_of is not None:
            sizes = torch.bincount(self.unit_of[0], minlength=self.num_units)
            starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
            position = position - starts[self.unit_of]
        return torch.stack([position // cols, position % cols], dim=-1)

    def full_width_cls(self, layer: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """[CLS] row of ViT layer ``layer``'s attention taken as **one head over the full width** (the heads'
        queries and keys concatenated, scaled by width**-0.5; PruMerge's single-head attention), fp32, and the
        full-width keys: ((B, N), (B, N, H * d_head)). Softmax over all keys of the unit, [CLS] included."""
        if not self.has_cls:
            raise ValueError("this vision tower has no [CLS] token; use importance() or received_attention() instead")
        probs, keys = _full_width_cls(self._capture(layer))
        return probs[:, 1:], keys[:, 1:]


@dataclass
class UnitVisionView(VisionView):
    """A :class:`VisionView` over a CLIP-style tower run on several units (AnyRes crops, video frames).

    ``captured`` holds q/k of shape (B*U, H, T, d) (sample-major, T tokens per unit, [CLS] at 0);
    ``token_map`` (B, N) gives, for each candidate token in LLM order, its index in the flattened (U*T) tower
    tokens. Signals are computed per unit and gathered through the map, so a candidate's [CLS] attention is the
    attention of **its own unit's** [CLS] (for a token that is itself a [CLS], as Video-LLaVA's video frames
    keep them, its attention to itself); ``cls_feature`` is the first unit's [CLS] (LLaVA-NeXT: the base crop).
    """

    token_map: torch.Tensor = None  # type: ignore[assignment]
    unit_tokens: int = 0

    def cls_attention(self, layer: int | None = None, heads: HeadReduce = "mean") -> torch.Tensor:
        if not self.has_cls:
            raise ValueError("this vision tower has no [CLS] token; use importance() or received_attention() instead")
        cap = self._capture(layer)
        units, num_heads, tokens = cap.query.shape[0], cap.query.shape[1], cap.key.shape[2]
        rows = torch.zeros(units, 1, dtype=torch.long, device=cap.query.device)
        probs = cap.probabilities(rows)[:, :, 0, :]  # (B*U, H, T)
        probs = probs.view(self.batch_size, -1, num_heads, tokens).transpose(1, 2).reshape(self.batch_size, num_heads, -1)
        probs = probs.gather(2, self.token_map[:, None, :].expand(-1, num_heads, -1))
        return _reduce_heads(probs, heads)

    def received_attention(self, layer: int | None = None) -> torch.Tensor:
        received = self._capture(layer).received().reshape(self.batch_size, -1)
        return received.gather(1, self.token_map)

    def keys(self, layer: int | None = None, include_cls: bool = False) -> torch.Tensor:
        keys = self._capture(layer).key.mean(1)
        keys = keys.reshape(self.batch_size, -1, keys.shape[-1])
        picked = keys.gather(1, self.token_map[..., None].expand(-1, -1, keys.shape[-1]))
        return torch.cat([keys[:, :1], picked], dim=1) if include_cls and self.has_cls else picked

    def grid_coords(self) -> torch.Tensor:
        tokens = self.token_map % self.unit_tokens - (1 if self.has_cls else 0)  # -1: the unit's [CLS]
        cols = self.grid[1]
        patch = tokens >= 0
        return torch.stack([torch.where(patch, tokens // cols, -1), torch.where(patch, tokens % cols, -1)], dim=-1)

    def full_width_cls(self, layer: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.has_cls:
            raise ValueError("this vision tower has no [CLS] token; use importance() or received_attention() instead")
        probs, keys = _full_width_cls(self._capture(layer))  # per unit: (B*U, T), (B*U, T, W)
        probs = probs.reshape(self.batch_size, -1).gather(1, self.token_map)
        keys = keys.reshape(self.batch_size, -1, keys.shape[-1])
        return probs, keys.gather(1, self.token_map[..., None].expand(-1, -1, keys.shape[-1]))


@dataclass
class LayerView(_SeededView):
    """The prefill state just before decoder layer ``layer`` prunes.

    ``hidden_states``: (B, L, D) input of layer ``layer`` (output of layer ``layer - 1``).
    ``visual_index``: (B, n) positions in this sequence of the visual tokens still present.
    ``valid``: (B, L) False for padding.
    ``captured``: queries/keys of layer ``layer - 1`` (its attention produced these hidden states).
    """

    layer: int = 0
    hidden_states: torch.Tensor = None  # type: ignore[assignment]
    visual_index: torch.Tensor = None  # type: ignore[assignment]
    valid: torch.Tensor = None  # type: ignore[assignment]
    position_ids: torch.Tensor | None = None
    captured: Captured | None = field(default=None, repr=False)
    # (cos, sin) RoPE tables of this sequence's tokens, (B, L, d_head) each (SparseVLM v2's RoPE correction)
    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)
    # the LLM's prefill input (layer-0 hidden states) before any LLM stage, and where its visual tokens were:
    # signals defined on the input embeddings (SparseVLM's text raters) stay fixed for the whole prefill
    input_embeds: torch.Tensor | None = field(default=None, repr=False)
    input_visual_index: torch.Tensor | None = field(default=None, repr=False)
    # the LLM's final norm (RMSNorm), for methods that measure similarity in its output space (DART); None: not given
    final_norm: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)
    # the decoder layer about to run (layer ``layer``): :meth:`layer_attention` recomputes its attention rows
    decoder_layer: torch.nn.Module | None = field(default=None, repr=False)

    @property
    def batch_size(self) -> int:
        return self.hidden_states.shape[0]

    @property
    def num_visual(self) -> int:
        return self.visual_index.shape[1]

    @property
    def last_index(self) -> torch.Tensor:
        """(B, 1) position of the last prompt token (prompts are left-padded, so always L - 1)."""
        return torch.full((self.batch_size, 1), self.hidden_states.shape[1] - 1, dtype=torch.long, device=self.hidden_states.device)

    def text_after_visual(self) -> torch.Tensor:
        """(B, r) positions of the prompt tokens after the last visual token (the question and template)."""
        length = self.hidden_states.shape[1]
        start = int(self.visual_index.max(dim=1).values.min()) + 1
        return torch.arange(start, length, device=self.hidden_states.device).expand(self.batch_size, -1)

    def text_queries(self, from_input: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows (B, r) of the prompt tokens after each sample's last visual token, and a (B, r) validity mask.

        With left padding the visual span ends at a different position per sample; rows run from the earliest
        end in the batch to L - 1 and ``valid`` marks, per sample, the rows that are really after its image, so
        a masked mean over rows gives every sample the same value alone and in a batch.

        ``from_input=True``: the image's end is read from the LLM's input (``input_visual_index``, before any
        LLM stage) and the rows are those same tokens in this sequence (text after the image is never pruned and
        every sequence ends at L - 1). It differs from the default after a stage that pruned the image's last
        tokens where non-candidate image tokens follow them (LLaVA-NeXT's row-closing newlines): those stay
        image, not text. SparseVLM's raters are defined this way, once per prefill.
        """
        if from_input and self.input_visual_index is not None and self.input_embeds is not None:
            shift = self.hidden_states.shape[1] - self.input_embeds.shape[1]
            last = self.input_visual_index.max(dim=1, keepdim=True).values + shift
            rows = torch.arange(int(last.min()) + 1, self.hidden_states.shape[1], device=self.hidden_states.device)
            rows = rows.expand(self.batch_size, -1)
            return rows, rows > last
        rows = self.text_after_visual()
        last = self.visual_index.max(dim=1, keepdim=True).values
        return rows, rows > last

    def attention(self, rows: torch.Tensor) -> torch.Tensor:
        """Attention probabilities of query rows ``rows`` (B, r) of layer ``layer - 1``: (B, H, r, L), fp32."""
        if self.captured is None:
            raise RuntimeError("no attention was captured for this stage")
        return self.captured.probabilities(rows)

    def attention_to_visual(self, rows: torch.Tensor, heads: HeadReduce = "mean") -> torch.Tensor:
        """Attention from query rows (B, r) to the visual tokens: (B, r, n) (or (B, H, r, n) with heads="none")."""
        probs = self.attention(rows)
        index = self.visual_index[:, None, None, :].expand(*probs.shape[:3], -1)
        return _reduce_heads(probs.gather(3, index), heads)

    def keys(self) -> torch.Tensor:
        """Post-RoPE keys of layer ``layer - 1`` (B, H_kv, L, d_head)."""
        if self.captured is None:
            raise RuntimeError("no keys were captured for this stage")
        return self.captured.key

    def layer_attention(self, rows: torch.Tensor) -> torch.Tensor:
        """Attention probabilities of query rows ``rows`` (B, r) at decoder layer ``layer`` itself, the layer about to
        run: (B, H, r, L), fp32.

        Recomputed from ``hidden_states`` with that layer's own ``input_layernorm``, ``q_proj`` / ``k_proj`` (queries
        only for ``rows``) and the rotary tables of the tokens present (``position_embeddings``, renumbered where
        the method renumbers), causal over the current sequence, padding masked: what PyramidDrop scores each
        stage with (one query row, so cheap, and independent of the attention kernel). Needs ``decoder_layer``.
        """
        layer = self.decoder_layer
        if layer is None or self.position_embeddings is None:
            raise PruneBenchError(
                "layer_attention needs the decoder layer about to run and the RoPE tables in the LayerView "
                "(prunebench.engine provides them); a hand-built view must pass decoder_layer= and position_embeddings="
            )
        attn = layer.self_attn
        bsz, length, width = self.hidden_states.shape
        x = layer.input_layernorm(self.hidden_states)
        head_dim = attn.head_dim
        query = attn.q_proj(x.gather(1, rows[..., None].expand(-1, -1, width))).view(bsz, rows.shape[1], -1, head_dim).transpose(1, 2)
        key = attn.k_proj(x).view(bsz, length, -1, head_dim).transpose(1, 2)
        cos, sin = self.position_embeddings

        def rotate(t: torch.Tensor, c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            half = t.shape[-1] // 2
            turned = torch.cat([-t[..., half:], t[..., :half]], dim=-1)
            return t * c[:, None].to(t.dtype) + turned * s[:, None].to(t.dtype)

        at_rows = rows[..., None].expand(-1, -1, cos.shape[-1])
        query = rotate(query, cos.gather(1, at_rows), sin.gather(1, at_rows)).float()
        key = rotate(key, cos, sin).float()
        key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
        logits = query @ key.transpose(-1, -2) * float(getattr(attn, "scaling", head_dim**-0.5))
        positions = torch.arange(length, device=rows.device)
        allowed = (positions[None, None, :] <= rows[..., None]) & self.valid[:, None, :].bool()
        return torch.softmax(logits.masked_fill(~allowed[:, None], float("-inf")), dim=-1)


@dataclass
class RecycledSelection(Selection):
    """An LLM-stage selection some of whose kept tokens carry new hidden states (recycled / merged tokens).

    ``values``: (B, k) rows aligned with ``keep``; where ``replace`` (B, k) is True the kept token enters layer K
    with ``values`` instead of its own hidden state (SparseVLM's recycled cluster means, placed in the slot of
    their cluster centre). The token keeps that slot's position id and its KV-cache entry in later layers.
    """

    values: torch.Tensor | None = None  # (B, k, D)
    replace: torch.Tensor | None = None  # (B, k) bool
