"""How long each method's selection takes, at LLaVA-1.5-7B / LLaVA-NeXT-7B sizes, on synthetic signals.

Inputs have the real widths: CLIP ViT-L/14-336 (24 layers, 16 heads, head_dim 64, 577 keys per crop, 1024-d
features of layer 22 = ``hidden_states[-2]``), a 4096-d projector output, and a Vicuna-7B layer for FastV
(32 heads, head_dim 128, hidden 4096, causal, prompt = 35 system tokens + image + 40 text tokens). Every
method runs with its paper defaults at a budget of 64 tokens per 576 (VisPruner's 48 + 16 point, HiPrune's
one anchor). A timed call is the whole ``select``: signals (the [CLS] row or the query-chunked received
attention from captured q/k, the cosine matrices) are computed inside it, as in a real run; only the
projector output is precomputed (the engine reuses it for the LLM input, so it is not selection cost).

Groups:
  * ``576``: one LLaVA-1.5 image;
  * ``2880-crops``: LLaVA-NeXT's 5 x 576 (the FasterVLM/VisPruner "fivecrop" layout) as the adapter hands it
    over: one :class:`UnitVisionView` row of 2880 candidates, 5 crop units, q/k captured per crop (577 keys),
    320 kept. Methods whose signals need per-crop ViT attention run here (VisPruner, FasterVLM and HiPrune keep
    64 per crop, as their originals do on NeXT);
  * ``2880-global``: one row of 2880 tokens and 320 kept: methods whose signals do not need per-crop ViT
    attention (DivPrune's original selects globally over the NeXT image; random; LearnPruner's stage 1;
    FastV inside the LLM).
LLM-stage selections (FastV, DART, SparseVLM v2.0 and v1.5 with recycling, LearnPruner's stage 2) run on a
:class:`LayerView` of a Vicuna-7B layer in the ``576`` and ``2880-global`` groups: the hidden states, captured
q/k and RoPE tables of a prompt with the visual tokens that reach the stage (all of them for FastV and
SparseVLM's first pruning layer, its most expensive one; LearnPruner's R1 after stage 1), and the LLM input
embeddings SparseVLM's text raters read; the keep count is each method's plan for the group's budget.
``random`` runs in every group and is the baseline of the ratios printed at the end (see conftest.py).
Set ``PRUNEBENCH_BENCH_DEVICE=cuda`` to time on a GPU (each call is then synchronised).
"""

from __future__ import annotations

import os

import pytest
import torch

from prunebench.attention import Captured
from prunebench.core import PlanContext
from prunebench.registry import create_method, get_method_class, list_methods
from prunebench.views import Instruction, LayerView, UnitVisionView, VisionView, sample_generators

DEVICE = torch.device(os.environ.get("PRUNEBENCH_BENCH_DEVICE", "cpu"))
VIT_LAYERS, FEATURE_LAYER, VIT_HEADS, VIT_HEAD_DIM, VIT_WIDTH = 24, 22, 16, 64, 1024
LLM_LAYERS, LLM_HEADS, LLM_HEAD_DIM, LLM_WIDTH = 32, 32, 128, 4096
CROP, GRID, PER_CROP_BUDGET, CROPS = 576, (24, 24), 64, 5
SYSTEM_TOKENS, TEXT_TOKENS = 35, 40
# Paper defaults, except where a synthetic input needs an asset: LearnPruner's stage 1 with an untrained, seeded
# LPM (same shape and cost as a trained one).
OVERRIDES = {"learnpruner": {"checkpoint": "random"}}


def _builtin(name: str) -> bool:
    return get_method_class(name).__module__.startswith("prunebench.methods.")


# methods that act before the processor (the downsampling control: preprocess) select nothing to time
VISION_METHODS = [n for n in list_methods() if _builtin(n) and "vision" in get_method_class(n).stages and not hasattr(get_method_class(n), "preprocess")]
VIDEO_METHODS = ("evs", "vidcom2", "fastvid")  # video-only methods: timed in the video groups below, not on images
READS_VIT_ATTENTION = {n for n in VISION_METHODS if create_method(n, **OVERRIDES.get(n, {})).vision_layers(VIT_LAYERS, FEATURE_LAYER)}


# CDPruner's text side (``text_encoder="llm"``): a 10-word question embedded by a 7B-width LLM embedding table; PyramidDrop's
# score recomputes q/k with the decoder layer about to run: a Vicuna-7B-width input norm and q/k projections.
class _WordIds:
    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [sum(map(ord, w)) % 1000 for w in text.split()]}


def _instruction() -> Instruction:
    gen = torch.Generator().manual_seed(11)
    table = torch.nn.Embedding(1000, LLM_WIDTH).to(DEVICE)
    table.weight.data = torch.randn(1000, LLM_WIDTH, generator=gen).to(DEVICE)
    return Instruction(["is there a red square in the image ? answer with one word"], _WordIds(), table, DEVICE)


class _DecoderLayer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        from transformers.models.llama.modeling_llama import LlamaRMSNorm

        self.input_layernorm = LlamaRMSNorm(LLM_WIDTH)
        self.self_attn = torch.nn.Module()
        self.self_attn.q_proj = torch.nn.Linear(LLM_WIDTH, LLM_HEADS * LLM_HEAD_DIM, bias=False)
        self.self_attn.k_proj = torch.nn.Linear(LLM_WIDTH, LLM_HEADS * LLM_HEAD_DIM, bias=False)
        self.self_attn.head_dim, self.self_attn.scaling = LLM_HEAD_DIM, LLM_HEAD_DIM**-0.5


_LAYER: list[torch.nn.Module] = []


def _decoder_layer() -> torch.nn.Module:
    if not _LAYER:
        torch.manual_seed(5)
        _LAYER.append(_DecoderLayer().to(DEVICE).eval())
    return _LAYER[0]


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def _vision_view(units: int, tokens: int, seed: int) -> VisionView:
    """One image of ``tokens`` candidates; ``units`` > 1: that many 576-token crops with per-crop ViT q/k."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen).to(DEVICE)

    captured = {}
    if units * CROP == tokens:  # ViT attention exists per crop only
        layers = {l for n in VISION_METHODS for l in create_method(n, **OVERRIDES.get(n, {})).vision_layers(VIT_LAYERS, FEATURE_LAYER)}
        for layer in sorted(layers):
            q, k = randn(units, VIT_HEADS, CROP + 1, VIT_HEAD_DIM), randn(units, VIT_HEADS, CROP + 1, VIT_HEAD_DIM)
            captured[layer] = Captured(q, k, None, VIT_HEAD_DIM**-0.5, False)
    projected = randn(1, tokens, LLM_WIDTH)
    common = dict(
        features=randn(1, tokens, VIT_WIDTH),
        cls_feature=randn(1, VIT_WIDTH),
        feature_layer=FEATURE_LAYER,
        num_vision_layers=VIT_LAYERS,
        projector=lambda _: projected,
        captured=captured,
        has_cls=True,
        instruction=_instruction(),
    )
    if units > 1:
        position = torch.arange(tokens, device=DEVICE)
        unit_of = (position // CROP)[None]
        token_map = unit_of * (CROP + 1) + 1 + position % CROP
        view = UnitVisionView(**common, grid=GRID, num_units=units, unit_kind="crop", unit_of=unit_of, token_map=token_map, unit_tokens=CROP + 1)
    else:
        view = VisionView(**common, grid=GRID if tokens == CROP else (tokens // GRID[1], GRID[1]))
    view.generators = sample_generators(0, ["bench-0"])
    assert view.projected is projected  # cached: projection is not selection cost
    return view


LAYOUTS = {  # group -> (crop units, tokens, keep)
    "576": (1, CROP, PER_CROP_BUDGET),
    "2880-crops": (CROPS, CROPS * CROP, CROPS * PER_CROP_BUDGET),
    "2880-global": (1, CROPS * CROP, CROPS * PER_CROP_BUDGET),
}
CASES = [
    (group, name)
    for group in LAYOUTS
    for name in VISION_METHODS
    if name not in VIDEO_METHODS
    if name == "random" or (group == "2880-global") != (name in READS_VIT_ATTENTION) or group == "576"
]


@pytest.fixture(scope="module")
def views():
    return {group: _vision_view(units, tokens, seed=i) for i, (group, (units, tokens, _)) in enumerate(LAYOUTS.items())}


@pytest.mark.parametrize("group,name", CASES, ids=[f"{g}-{n}" for g, n in CASES])
def test_vision_selection(benchmark, views, group, name):
    _, tokens, keep = LAYOUTS[group]
    method = create_method(name, **OVERRIDES.get(name, {}))
    stage_keep = method.plan(keep, PlanContext(tokens, LLM_LAYERS, "average")).vision or keep
    view = views[group]

    def select():
        selection = method.select_vision(view, stage_keep)
        _sync()
        return selection

    benchmark.group = group
    benchmark.extra_info.update(method=name, tokens=tokens, kept=stage_keep, device=str(DEVICE))
    selection = benchmark(select)
    selection.validate(1, tokens, stage_keep, name)


def _layer_view(visual: int, seed: int) -> LayerView:
    gen = torch.Generator().manual_seed(seed)
    length = SYSTEM_TOKENS + visual + TEXT_TOKENS
    q = torch.randn(1, LLM_HEADS, length, LLM_HEAD_DIM, generator=gen).to(DEVICE)
    k = torch.randn(1, LLM_HEADS, length, LLM_HEAD_DIM, generator=gen).to(DEVICE)
    positions = torch.arange(length)[None]
    inv_freq = 1.0 / 10000.0 ** (torch.arange(0, LLM_HEAD_DIM, 2).float() / LLM_HEAD_DIM)
    angles = positions[..., None].float() * inv_freq
    angles = torch.cat([angles, angles], dim=-1)
    visual_index = (SYSTEM_TOKENS + torch.arange(visual))[None].to(DEVICE)
    return LayerView(
        layer=3,
        hidden_states=torch.randn(1, length, LLM_WIDTH, generator=gen).to(DEVICE),
        visual_index=visual_index,
        valid=torch.ones(1, length, dtype=torch.bool, device=DEVICE),
        position_ids=positions.to(DEVICE),
        captured=Captured(q, k, None, LLM_HEAD_DIM**-0.5, True),
        generators=sample_generators(0, ["bench-0"]),
        position_embeddings=(angles.cos().to(DEVICE), angles.sin().to(DEVICE)),
        input_embeds=torch.randn(1, length, LLM_WIDTH, generator=gen).to(DEVICE),
        input_visual_index=visual_index,
        decoder_layer=_decoder_layer(),
    )


# name -> (label, parameters, which stage's keep count and candidate count the timed call gets)
LLM_METHODS = {
    "fastv": ("fastv (select_llm)", {}),
    "sparsevlm-2.0": ("sparsevlm v2.0 (select_llm)", {"version": "2.0"}),
    "sparsevlm-1.5": ("sparsevlm v1.5 recycle (select_llm)", {"version": "1.5"}),
    "learnpruner": ("learnpruner stage 2 (select_llm)", {"checkpoint": "random"}),
    "dart": ("dart (select_llm)", {}),
    "pdrop": ("pdrop first stage (select_llm)", {}),
    "vscan": ("vscan stage 2 (select_llm)", {}),
}


def _llm_stage(name: str, tokens: int, keep: int):
    """(method, candidates at the timed stage, keep count there) from the method's own plan for the budget."""
    method = create_method(name.split("-")[0], **LLM_METHODS[name][1])
    plan = method.plan(keep, PlanContext(tokens, LLM_LAYERS, "final" if name in ("fastv", "dart") else "average"))
    first = min(plan.llm)
    return method, plan.vision or tokens, plan.llm[first]


@pytest.mark.parametrize("group", ["576", "2880-global"])
@pytest.mark.parametrize("name", list(LLM_METHODS))
def test_llm_selection(benchmark, group, name):
    _, tokens, keep = LAYOUTS[group]
    method, candidates, stage_keep = _llm_stage(name, tokens, keep)
    view = _layer_view(candidates, seed=7)

    def select():
        selection = method.select_llm(view, stage_keep)
        _sync()
        return selection

    benchmark.group = group
    benchmark.extra_info.update(method=LLM_METHODS[name][0], tokens=candidates, kept=stage_keep, device=str(DEVICE))
    selection = benchmark(select)
    selection.validate(1, candidates, stage_keep, name)


# -- video: LLaVA-OneVision-7B's layout (196 pooled, projected tokens per frame, Qwen2-7B width 3584) ----------------
# at 8, 32 and 64 frames, 25 % kept (49 per frame on average); random runs in every group as the baseline.
OV_PER_FRAME, OV_WIDTH, VIDEO_RETENTION = 196, 3584, 0.25
VIDEO_FRAMES = (8, 32, 64)
VIDEO_CASES = [(frames, name) for frames in VIDEO_FRAMES for name in ("random", *VIDEO_METHODS)]


def _video_view(frames: int, seed: int) -> UnitVisionView:
    gen = torch.Generator().manual_seed(seed)
    tokens = frames * OV_PER_FRAME
    # frames drift slowly (correlated like a real clip) so temporal dissimilarities and frame uniqueness vary
    base = torch.randn(1, 1, OV_PER_FRAME, OV_WIDTH, generator=gen)
    drift = torch.randn(1, frames, OV_PER_FRAME, OV_WIDTH, generator=gen).mul(0.3).cumsum(1)
    features = (base + drift).flatten(1, 2).to(DEVICE)
    # per-frame SigLIP-width q/k (16 heads x 72) at the importance layer, for methods that read received attention
    q, k = (torch.randn(frames, 16, OV_PER_FRAME, 72, generator=gen).to(DEVICE) for _ in range(2))
    token_map = torch.arange(tokens, device=DEVICE)[None]
    view = UnitVisionView(
        features=features,
        cls_feature=None,
        grid=(14, 14),
        feature_layer=FEATURE_LAYER,
        num_vision_layers=VIT_LAYERS,
        projector=lambda f: f,
        captured={FEATURE_LAYER: Captured(q, k, None, 72**-0.5, False)},
        has_cls=False,
        num_units=frames,
        unit_kind="frame",
        unit_of=token_map // OV_PER_FRAME,
        importance_layer=FEATURE_LAYER,
        token_map=token_map,
        unit_tokens=OV_PER_FRAME,
    )
    view.generators = sample_generators(0, ["bench-0"])
    assert view.projected is features
    return view


@pytest.fixture(scope="module")
def video_views():
    return {frames: _video_view(frames, seed=20 + frames) for frames in VIDEO_FRAMES}


@pytest.mark.parametrize("frames,name", VIDEO_CASES, ids=[f"video-{f}f-{n}" for f, n in VIDEO_CASES])
def test_video_selection(benchmark, video_views, frames, name):
    tokens = frames * OV_PER_FRAME
    keep = int(tokens * VIDEO_RETENTION)
    method = create_method(name)
    view = video_views[frames]

    def select():
        selection = method.select_vision(view, keep)
        _sync()
        return selection

    benchmark.group = f"video-{frames}f"
    benchmark.extra_info.update(method=name, tokens=tokens, kept=keep, device=str(DEVICE))
    selection = benchmark(select)
    selection.validate(1, tokens, keep, name)
