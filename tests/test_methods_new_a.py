"""DART, pool, PruMerge+, HoloV and SCOPE on hand-built inputs whose kept sets follow from the algorithms by hand.

Views are built by hand (see test_methods_vision.py / test_methods_llm.py): planted hidden states, keys and
captured ViT queries/keys make the pivots, [CLS] attention and cosine geometry known exactly.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from prunebench.attention import Captured
from prunebench.core import InfeasibleBudget, PlanContext, UnsupportedModel, check_plan_meets_budget, solve_single_cut
from prunebench.methods.holov import allocate
from prunebench.methods.pool import pooled_shape
from prunebench.methods.prumerge_plus import iqr_outliers
from prunebench.registry import create_method
from prunebench.views import LayerView, VisionView, sample_generators


# -- DART --------------------------------------------------------------------------------------------------------
def e(i: int, dim: int = 12) -> torch.Tensor:
    return F.one_hot(torch.tensor(i), dim).float()


def dart_view(hidden: torch.Tensor, key_norm: torch.Tensor, visual: list[int], pad: int = 0, final_norm=None) -> LayerView:
    """One sample: hidden states (L, D), per-token key L1 norms (L,), visual positions; ``pad`` left-pad tokens."""
    length, dim = hidden.shape
    hidden = torch.cat([torch.zeros(pad, dim), hidden])[None]
    key = torch.zeros(1, 2, pad + length, 3)
    key[0, 0, pad:, 0] = key_norm  # the L1 norm over heads and dims is the planted value
    valid = torch.tensor([[False] * pad + [True] * length])
    return LayerView(
        layer=2,
        hidden_states=hidden,
        visual_index=torch.tensor([[pad + v for v in visual]]),
        valid=valid,
        position_ids=(valid.long().cumsum(1) - 1).clamp(min=0),
        captured=Captured(query=torch.zeros(1, 2, pad + length, 3), key=key, mask=None, scaling=1.0, causal=True),
        generators=sample_generators(0, ["s"]),
        final_norm=final_norm,
    )


def planted_duplicates():
    """0 = BOS, 1..12 visual, 13..16 text. Image pivot 3 (largest visual key norm) along e0, text pivot 15 along e1;
    tokens 1, 2, 4, 5 duplicate the image pivot and 6, 7 the text pivot; 8..12 are distinct, anti-aligned with both
    pivots, the more the smaller their own component t (cos to either pivot = -1 / sqrt(2 + t^2))."""
    hidden = torch.zeros(17, 12)
    hidden[0] = e(11)
    for i in (1, 2, 3, 4, 5):
        hidden[i] = e(0)
    for i in (6, 7, 15):
        hidden[i] = e(1)
    for n, i in enumerate(range(8, 13)):
        hidden[i] = -e(0) - e(1) + (0.1 * (n + 1)) * e(2 + n)
    for i in (13, 14, 16):
        hidden[i] = e(9) + 0.1 * i * e(10)
    norm = torch.ones(17)
    norm[3], norm[15] = 5.0, 4.0
    return hidden, norm


def test_dart_drops_duplicates_of_the_pivots_for_distinct_tokens():
    hidden, norm = planted_duplicates()
    view = dart_view(hidden, norm, list(range(1, 13)))
    method = create_method("dart", image_pivots=1, text_pivots=1)
    # pivot 3 claims the two tokens least similar to it (8, 9), then pivot 15 the next two (10, 11)
    keep = method.select_llm(view, 5).keep[0].tolist()
    assert [view.visual_index[0, k].item() for k in keep] == [3, 8, 9, 10, 11]
    assert not {1, 2, 4, 5, 6, 7} & {view.visual_index[0, k].item() for k in keep}


def test_dart_keeps_exactly_the_budget_and_spreads_the_claims_over_the_pivots():
    hidden, norm = planted_duplicates()
    view = dart_view(hidden, norm, list(range(1, 13)))
    # 1 image pivot + 6 claims over 2 pivots: 3 each; pivot 3 claims 8, 9, 10, then pivot 15 claims 11, 12 and then
    # the least similar to e1 of the rest: the image-pivot duplicates (cos 0) before its own duplicates (cos 1)
    keep = create_method("dart", image_pivots=1, text_pivots=1).select_llm(view, 7).keep[0].tolist()
    assert [view.visual_index[0, k].item() for k in keep] == [1, 3, 8, 9, 10, 11, 12]


def test_dart_pivot_order_is_the_cpython_set_order_of_the_unpadded_indices():
    """Image pivot at index 5 and text pivot at 10: a fresh 8-slot set holds 10 in slot 2 and 5 in slot 5, so the
    original iterates 10 (the text pivot) first; ``sorted`` starts with 5. Left padding must not change it."""
    hidden = torch.randn(14, 12, generator=torch.Generator().manual_seed(0))
    norm = torch.ones(14)
    norm[5], norm[10] = 9.0, 8.0
    for pad in (0, 3):
        view = dart_view(hidden, norm, list(range(1, 9)), pad=pad)
        order, image = create_method("dart", image_pivots=1, text_pivots=1).pivots(view, 4)
        assert (order[0] - pad).tolist() == [10, 5] and (view.visual_index[0, image[0]] - pad).tolist() == [5]
        order, _ = create_method("dart", image_pivots=1, text_pivots=1, pivot_order="sorted").pivots(view, 4)
        assert (order[0] - pad).tolist() == [5, 10]


def test_dart_measures_duplication_after_the_final_norm():
    """Pivot p = e0 + e1. Raw: b = -e0 + 0.5 e2 is the least similar (cos -0.63 vs a's +0.63). Through a norm whose
    weight zeroes e1, p -> e0 and a = -0.1 e0 + e1 -> -0.1 e0 (cos -1) beats b (cos -0.89)."""
    hidden = torch.zeros(6, 12)
    hidden[0], hidden[5] = e(11), e(10)
    hidden[1] = e(0) + e(1)  # the pivot
    hidden[2] = -0.1 * e(0) + e(1)  # a
    hidden[3] = -e(0) + 0.5 * e(2)  # b
    hidden[4] = e(0)
    norm = torch.ones(6)
    norm[1] = 5.0
    weight = torch.ones(12)
    weight[1] = 0.0

    def rms(h):
        return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6) * weight

    method = create_method("dart", image_pivots=1, text_pivots=0)
    assert method.select_llm(dart_view(hidden, norm, [1, 2, 3, 4]), 2).keep[0].tolist() == [0, 2]
    assert method.select_llm(dart_view(hidden, norm, [1, 2, 3, 4], final_norm=rms), 2).keep[0].tolist() == [0, 1]
    hidden_only = create_method("dart", image_pivots=1, text_pivots=0, similarity="hidden")
    assert hidden_only.select_llm(dart_view(hidden, norm, [1, 2, 3, 4], final_norm=rms), 2).keep[0].tolist() == [0, 2]


def test_dart_batch_equals_one_by_one():
    gen = torch.Generator().manual_seed(3)
    views = []
    for b in range(2):
        hidden = torch.randn(20, 12, generator=gen)
        norm = torch.rand(20, generator=gen) + 0.1
        views.append(dart_view(hidden, norm, list(range(2, 14)), pad=2 * b))
    alone = [create_method("dart").select_llm(v, 9).keep for v in views]
    width = views[1].hidden_states.shape[1]
    pad0 = width - views[0].hidden_states.shape[1]
    both = LayerView(
        layer=2,
        hidden_states=torch.cat([F.pad(views[0].hidden_states, (0, 0, pad0, 0)), views[1].hidden_states]),
        visual_index=torch.cat([views[0].visual_index + pad0, views[1].visual_index]),
        valid=torch.cat([F.pad(views[0].valid, (pad0, 0)), views[1].valid]),
        captured=Captured(
            query=torch.zeros(2, 2, width, 3),
            key=torch.cat([F.pad(views[0].captured.key, (0, 0, pad0, 0)), views[1].captured.key]),
            mask=None,
            scaling=1.0,
            causal=True,
        ),
        generators=sample_generators(0, ["a", "b"]),
    )
    assert torch.equal(create_method("dart").select_llm(both, 9).keep, torch.cat(alone))


def test_dart_plan_is_fastv_like():
    method = create_method("dart")
    assert method.plan(132, PlanContext(576, 32, "final")).llm == {2: 132}
    plan = method.plan(192, PlanContext(576, 32, "average"))
    assert plan.llm == {2: solve_single_cut(192, PlanContext(576, 32, "average"), 2)}
    check_plan_meets_budget(plan, 192, "average", "dart")


# -- pool --------------------------------------------------------------------------------------------------------
def grid_view(features: torch.Tensor, grid: tuple[int, int], captured=None, projector=None, has_cls=True) -> VisionView:
    return VisionView(
        features=features,
        cls_feature=features[:, 0],
        grid=grid,
        feature_layer=1,
        num_vision_layers=3,
        projector=projector or (lambda x: x),
        captured=captured or {},
        has_cls=has_cls,
    )


def test_pool_shapes_follow_the_grid_aspect():
    assert pooled_shape(192, 24, 24) == [16] * 12 and pooled_shape(128, 24, 24) == [16] * 8
    assert pooled_shape(64, 24, 24) == [8] * 8 and pooled_shape(32, 24, 24) == [8] * 4
    assert pooled_shape(7, 4, 4) == [3, 2, 2]  # no rectangle fits: 3 bands of 3, 2, 2 bins


def test_pool_averages_the_grid_windows():
    """Features = (row, col) of a 4x4 grid; pooled to 4 = 2x2 bins, each token is its 2x2 window's centre."""
    rows, cols = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    feats = torch.stack([rows.flatten(), cols.flatten()], dim=-1)[None]
    selection = create_method("pool").select_vision(grid_view(feats, (4, 4)), 4)
    assert selection.keep.shape == (1, 0)
    assert selection.append[0].tolist() == [[0.5, 0.5], [0.5, 2.5], [2.5, 0.5], [2.5, 2.5]]
    maxed = create_method("pool", reduce="max").select_vision(grid_view(feats, (4, 4)), 4).append[0].tolist()
    assert maxed == [[1.0, 1.0], [1.0, 3.0], [3.0, 1.0], [3.0, 3.0]]


def test_pool_keeps_a_constant_grid_constant_at_any_count():
    feats = torch.full((2, 16, 3), 2.5)
    for keep in (1, 5, 7, 16 - 1):
        selection = create_method("pool").select_vision(grid_view(feats, (4, 4)), keep)
        assert selection.num_tokens == keep and torch.allclose(selection.append, torch.full((2, keep, 3), 2.5))


def test_pool_refuses_mrope_models():
    class Adapter:
        mrope = True

        def project(self, x):
            return x

    feats = torch.randn(1, 16, 3)
    with pytest.raises(UnsupportedModel):
        create_method("pool").select_vision(grid_view(feats, (4, 4), projector=Adapter().project), 4)


# -- PruMerge+ ---------------------------------------------------------------------------------------------------
def last_layer(logits: torch.Tensor, directions: torch.Tensor | None = None) -> Captured:
    """One head of width 4 whose full-width [CLS] logits are ``logits`` (B, 1 + N) ([CLS] first); keys' other
    components = ``directions`` (B, 1 + N, 3), scaled up so the key cosine follows them."""
    bsz, length = logits.shape
    key = torch.zeros(bsz, 1, length, 4)
    key[..., 0] = logits[:, None]
    if directions is not None:
        key[:, 0, :, 1:] = 1000 * directions
    query = torch.zeros(bsz, 1, length, 4)
    query[:, :, 0, 0] = 2.0  # full-width scale 4**-0.5 = 0.5: logit_j = 2 * k_j0 * 0.5
    return Captured(query=query, key=key, mask=None, scaling=0.5, causal=False)


def test_prumerge_iqr_counts_planted_outliers():
    attention = torch.full((1, 24), 0.01) + torch.linspace(0, 0.001, 24)[None]
    attention[0, [5, 11, 17]] = torch.tensor([0.5, 0.4, 0.3])
    assert iqr_outliers(attention).tolist() == [3]


def test_prumerge_adaptive_keeps_outliers_and_the_uniform_supplement():
    """24 patches, outliers 5 > 11 > 17: rho = 1/8, s = 8, step int(8/3) = 2, uniform = 0, 2, .., 22 (none an
    outlier): 3 + 12 kept + 1 extra = 16 tokens; any other budget is infeasible and names the real count."""
    logits = torch.zeros(1, 25)
    logits[0, 1:] = torch.linspace(0, 0.01, 24)
    logits[0, [6, 12, 18]] = torch.tensor([6.0, 5.0, 4.0])  # patches 5, 11, 17
    view = grid_view(torch.randn(1, 24, 3), (4, 6), captured={2: last_layer(logits)})
    method = create_method("prumerge+", variant="adaptive", neighbours=0)
    attention, _ = method.signals_of(view)
    assert method.kept(attention, 16)[0].tolist() == [5, 11, 17] + list(range(0, 23, 2))
    assert method.adaptive_counts(attention).tolist() == [16]
    assert method.select_vision(view, 16).num_tokens == 16
    with pytest.raises(InfeasibleBudget, match=r"\[16\]"):
        method.select_vision(view, 15)


def test_prumerge_fixed_merges_neighbours_and_adds_the_pruned_tokens():
    """4 patches, attention top = patch 2. Budget 3 = 1 top + 1 uniform (the middle of the rest [0, 1, 3] = 1) + 1
    extra. Key directions: 2's nearest is 3, 1's nearest is 0. x2' = x2 + a3 x3, x1' = x1 + a0 x0, extra = a0 x0 +
    a3 x3 (pruned: 0 and 3); output order = top, uniform, extra."""
    logits = torch.tensor([[0.0, 0.1, 0.2, 3.0, 0.3]])
    directions = torch.tensor([[[0.0, 0, 1], [1, 0.2, 0], [1, 0, 0], [0, 1, 0.1], [0, 1, 0]]])
    x = torch.arange(12.0).view(1, 4, 3)
    view = grid_view(x, (2, 2), captured={2: last_layer(logits, directions)})
    a = torch.softmax(logits[0], 0)[1:]
    appended = create_method("prumerge+", neighbours=1).select_vision(view, 3).append[0]
    expected = torch.stack([x[0, 2] + a[3] * x[0, 3], x[0, 1] + a[0] * x[0, 0], a[0] * x[0, 0] + a[3] * x[0, 3]])
    assert torch.allclose(appended, expected, atol=1e-5)


def test_prumerge_refuses_towers_without_cls():
    view = grid_view(torch.randn(1, 4, 3), (2, 2), has_cls=False)
    with pytest.raises(UnsupportedModel):
        create_method("prumerge+").select_vision(view, 3)


# -- HoloV -------------------------------------------------------------------------------------------------------
def cls_captured(patch_logits: torch.Tensor) -> Captured:
    """[CLS] attention logits (B, N) for the patches ([CLS] itself at -10), one head."""
    logits = torch.cat([torch.full((patch_logits.shape[0], 1), -10.0), patch_logits], dim=1)
    key = torch.zeros(logits.shape[0], 1, logits.shape[1], 4)
    key[..., 0] = logits[:, None]
    query = torch.zeros_like(key)
    query[..., 0] = 1.0
    return Captured(query=query, key=key, mask=None, scaling=1.0, causal=False)


def test_holov_allocates_by_chunk_score_and_keeps_each_chunks_top_attention():
    """8 identical tokens, 2 chunks of 4. Attention mass 0.7 : 0.3 between the chunks: floor(2.8) = 2 and floor(1.2) = 1,
    the remainder to chunk 0: quotas 3 and 1; chunk 0 keeps its 3 most attended (2, 0, 3), chunk 1 its top one (7)."""
    probs = torch.tensor([[0.2, 0.1, 0.25, 0.15, 0.02, 0.05, 0.08, 0.15]])
    view = grid_view(torch.ones(1, 8, 3), (2, 4), captured={1: cls_captured(probs.log())})
    assert create_method("holov", num_patches=2).select_vision(view, 4).keep[0].tolist() == [0, 2, 3, 7]


def test_holov_hands_a_chunks_overflow_to_the_chunks_with_room():
    """Weights 0.9 / 0.1 at K = 6 over chunks of 4: floor gives 5 and 0, the remainder 1 goes to chunk 0 (6 > 4):
    2 overflow tokens go to chunk 1 (the code would zero-pad them)."""
    assert allocate(torch.tensor([[0.9, 0.1]]), torch.tensor([4, 4]), 6).tolist() == [[4, 2]]
    assert allocate(torch.tensor([[0.5, 0.3, 0.2]]), torch.tensor([4, 4, 4]), 7).tolist() == [[4, 2, 1]]


VARIED = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1]])


def test_holov_variance_term_does_not_move_quota_between_chunks():
    """gamma rescales the variance to the chunk's own attention scale, so every chunk scores mean(1000 a)(1 + alpha)
    whatever its features (HoloV issue #15): identical tokens in chunk 0, varied ones in chunk 1, same quotas."""
    probs = torch.tensor([[0.2, 0.1, 0.25, 0.15, 0.02, 0.05, 0.08, 0.15]])
    plain = grid_view(torch.ones(1, 8, 4), (2, 4), captured={1: cls_captured(probs.log())})
    feats = torch.ones(1, 8, 4)
    feats[0, 4:] = VARIED
    varied = grid_view(feats, (2, 4), captured={1: cls_captured(probs.log())})
    method = create_method("holov", num_patches=2, alpha=5.0)
    assert method.select_vision(plain, 4).keep.tolist() == method.select_vision(varied, 4).keep.tolist() == [[0, 2, 3, 7]]


def test_holov_holistic_rank_prefers_the_token_with_varied_similarities():
    """Equal attention: the code's attention rank keeps the first token; the paper's holistic rank keeps token 2,
    whose cosine similarities to the chunk vary most (variance 0.185 vs 0.130, 0.130, 0)."""
    view = grid_view(VARIED[None], (2, 2), captured={1: cls_captured(torch.zeros(1, 4))})
    assert create_method("holov", num_patches=1).select_vision(view, 1).keep.tolist() == [[0]]
    assert create_method("holov", num_patches=1, rank="holistic").select_vision(view, 1).keep.tolist() == [[2]]


# -- SCOPE -------------------------------------------------------------------------------------------------------
def clusters() -> torch.Tensor:
    """Tokens 0, 1, 2 = e0 (a cluster of 3), 3, 4 = e1 (2), 5 = e2 (1)."""
    return torch.stack([e(0, 3)] * 3 + [e(1, 3)] * 2 + [e(2, 3)])[None]


def test_scope_greedy_coverage_finds_the_facility_location_optimum():
    """Uniform saliency, K = 2: the optimum covers the two largest clusters (coverage 5): 0 then 3, never two
    members of one cluster. Top-[CLS]-attention would keep 1 and 2 (duplicates) when they are the most salient."""
    logits = torch.zeros(1, 6)
    view = grid_view(clusters(), (2, 3), captured={1: cls_captured(logits)})
    assert create_method("scope").select_vision(view, 2).keep[0].tolist() == [0, 3]
    logits[0, [1, 2]] = 0.5
    view = grid_view(clusters(), (2, 3), captured={1: cls_captured(logits)})
    assert create_method("scope").select_vision(view, 2).keep[0].tolist() == [1, 3]


def test_scope_saliency_weights_the_coverage_gain():
    """Token 5 alone but 10x as salient: 1 x 10 beats 3 x 1, then cluster 0 (3) beats cluster 3 (2)."""
    logits = torch.zeros(1, 6)
    logits[0, 5] = math.log(10.0)
    view = grid_view(clusters(), (2, 3), captured={1: cls_captured(logits)})
    method = create_method("scope")
    assert method.select_vision(view, 2).keep[0].tolist() == [0, 5]
    assert create_method("scope", alpha=0.0).select_vision(view, 2).keep[0].tolist() == [0, 3]


def test_scope_refuses_towers_without_cls():
    with pytest.raises(UnsupportedModel):
        create_method("scope").select_vision(grid_view(clusters(), (2, 3), has_cls=False), 2)


def test_grid_coords_and_pool_skip_frame_cls_tokens():
    """Two Video-LLaVA-like frames of [CLS] + 2x2 patches (the HF model keeps the frame [CLS] as a candidate):
    [CLS] tokens are off the grid (-1) and pooling averages each frame's patches only, one token per frame here."""
    from prunebench.views import UnitVisionView

    feats = torch.arange(10.0)[None, :, None].expand(1, 10, 2).clone()
    token_map = torch.arange(10)[None]
    view = UnitVisionView(
        features=feats,
        cls_feature=None,
        grid=(2, 2),
        feature_layer=1,
        num_vision_layers=3,
        projector=lambda x: x,
        has_cls=True,
        num_units=2,
        unit_kind="frame",
        unit_of=token_map // 5,
        token_map=token_map,
        unit_tokens=5,
    )
    coords = view.grid_coords()[0].tolist()
    assert coords[0] == coords[5] == [-1, -1] and coords[1:5] == coords[6:10] == [[0, 0], [0, 1], [1, 0], [1, 1]]
    pooled = create_method("pool").select_vision(view, 2).append[0, :, 0].tolist()
    assert pooled == [2.5, 7.5]  # means of patches 1..4 and 6..9, the [CLS] values 0 and 5 left out


def _dart_reference(hidden: torch.Tensor, l1: torch.Tensor, start: int, num: int, m: int) -> list[int]:
    """The authors' rule written out with Python sets (``get_retained_image_token``): 4 image + 4 text pivots by key
    L1 norm, each pivot in CPython set order claims the m // 8 remaining candidates least cosine-similar to it."""
    unit = F.normalize(hidden, dim=-1)
    image = (start + l1[start : start + num].topk(4).indices).tolist()
    text = (start + num + l1[start + num :].topk(4).indices).tolist()
    kept = set(image + text)
    pool = set(range(start, start + num)) - set(image)
    for pivot in list(kept):
        candidates = sorted(pool)
        similarity = unit[candidates] @ unit[pivot]
        chosen = {candidates[i] for i in (-similarity).topk(m // 8).indices.tolist()}
        kept |= chosen
        pool -= chosen
    return sorted(kept - set(text))


@pytest.mark.parametrize("m", [8, 16, 24])
def test_dart_budget_4_plus_8_topk_is_the_original_rule(m):
    """Budget 4 + 8 (m // 8) in final mode keeps exactly what the original keeps for its argument m (its '128' row
    keeps 132), on random states where no ties occur."""
    gen = torch.Generator().manual_seed(m)
    start, num, length = 5, 40, 56
    hidden = torch.randn(length, 12, generator=gen)
    l1 = torch.rand(length, generator=gen) + 0.1
    view = dart_view(hidden, l1, list(range(start, start + num)))
    keep = create_method("dart").select_llm(view, 4 + 8 * (m // 8)).keep[0]
    assert (view.visual_index[0, keep]).tolist() == _dart_reference(hidden, l1, start, num, m)


def _holov_reference(z: torch.Tensor, a: torch.Tensor, k: int, chunks: int = 16, alpha: float = 0.09) -> list[int]:
    """The released ``HoloV`` loop, chunk by chunk in Python (no overflow on these inputs, so no zero padding)."""
    n = a.numel()
    sizes = [n // chunks + (c < n % chunks) for c in range(chunks)]
    starts = [sum(sizes[:c]) for c in range(chunks)]
    scores = []
    for s, m in zip(starts, sizes):
        zc = z[s : s + m] / (z[s : s + m].norm(dim=-1, keepdim=True) + 1e-6)
        sim = zc @ zc.T
        sim.fill_diagonal_(0)
        mu = sim.sum(1, keepdim=True) / (m - 1)
        var = ((sim - mu) ** 2).sum(1) / (m - 1)
        scaled = 1000 * a[s : s + m]
        gamma = scaled.abs().mean() / (var.abs().mean() + 1e-6)
        scores.append(float((scaled + alpha * gamma * var).mean()))
    w = [x / (sum(scores) + 1e-6) for x in scores]
    q = [math.floor(x * k) for x in w]
    for c in sorted(range(chunks), key=lambda c: -w[c])[: k - sum(q)]:
        q[c] += 1
    assert all(qc <= m for qc, m in zip(q, sizes))
    kept = []
    for s, m, qc in zip(starts, sizes, q):
        kept += (s + a[s : s + m].topk(qc).indices).tolist() if qc < m else list(range(s, s + m))
    return sorted(kept)


def test_holov_equals_the_released_loop_without_overflow():
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(1, 96, 8, generator=gen)
    logits = torch.randn(1, 96, generator=gen)
    view = grid_view(z, (8, 12), captured={1: cls_captured(logits)})
    a = view.cls_attention()[0]
    kept = create_method("holov").select_vision(view, 24).keep[0].tolist()
    assert kept == _holov_reference(z[0], a, 24)


@pytest.mark.parametrize("keep, shape", [(192, (12, 16)), (128, (8, 16)), (64, (8, 8)), (35, (5, 7))])
def test_pool_equals_adaptive_avg_pool2d_on_rectangles(keep, shape):
    """Exact rectangles use PyTorch's adaptive windows, overlapping ones (24 -> 5, 7) included."""
    feats = torch.randn(2, 576, 6, generator=torch.Generator().manual_seed(keep))
    pooled = create_method("pool").select_vision(grid_view(feats, (24, 24)), keep).append
    expected = F.adaptive_avg_pool2d(feats.transpose(1, 2).reshape(2, 6, 24, 24), shape).flatten(2).transpose(1, 2)
    assert torch.allclose(pooled, expected, atol=1e-5)


@pytest.mark.parametrize("model", ["tiny-llava", "tiny-qwen2_5_vl"])
def test_adapter_final_norm_is_the_norm_after_the_last_decoder_layer(model):
    """DART's duplication space: the module that maps the last decoder layer's output to the LLM's final state."""
    from prunebench.models import load_model

    adapter = load_model(model)
    last_layer = adapter.decoder_layers()[-1]
    seen = []
    handle = last_layer.register_forward_hook(lambda module, args, output: seen.append(output[0] if isinstance(output, tuple) else output))
    embeds = torch.randn(1, 5, adapter.model.get_input_embeddings().weight.shape[1], generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            out = adapter._inner.language_model(inputs_embeds=embeds)
            assert torch.allclose(adapter.final_norm()(seen[-1]), out.last_hidden_state, atol=1e-6)
    finally:
        handle.remove()


def test_the_engine_hands_dart_the_llms_final_norm(tiny_llava, samples):
    """DART's duplication space is the LLM's final RMSNorm: the engine's LayerView must carry that module (a
    None here silently falls back to the raw layer output)."""
    from prunebench.engine import Pruner

    dart = create_method("dart")
    seen = []
    original = dart.select_llm

    def spy(view, keep):
        seen.append(view.final_norm)
        return original(view, keep)

    dart.select_llm = spy
    with Pruner(tiny_llava, dart, 64, budget_mode="final") as pruner:
        pruner.generate(tiny_llava.prepare(samples[:1]), max_new_tokens=1)
    assert seen and seen[0] is tiny_llava.final_norm() and seen[0] is not None
