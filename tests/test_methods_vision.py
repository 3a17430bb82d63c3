"""VisPruner / FasterVLM, DivPrune and HiPrune on hand-built inputs whose kept sets follow from the algorithms.

Every VisionView here is built by hand: features, projected embeddings and captured ViT queries/keys are
planted so that the [CLS] attention, received attention and cosine geometry are known exactly. A query that
is ``e_0 / scale`` against keys whose first component is ``v_j`` gives attention logits ``v_j`` for every
query row, so [CLS] attention and received attention are both ``softmax(v)`` over the keys.
"""

import pytest
import torch
import torch.nn.functional as F

from prunebench.attention import Captured
from prunebench.core import PruneBenchError
from prunebench.registry import create_method
from prunebench.views import VisionView

HEAD_DIM = 4


def planted(logits: torch.Tensor, heads: int = 2, queries: int | None = None) -> Captured:
    """Captured q/k of one ViT layer whose attention logits are ``logits`` (B, L) for every query row and head."""
    bsz, length = logits.shape
    scale = HEAD_DIM**-0.5
    key = torch.zeros(bsz, heads, length, HEAD_DIM)
    key[..., 0] = logits[:, None, :]
    query = torch.zeros(bsz, heads, queries or length, HEAD_DIM)
    query[..., 0] = 1 / scale
    return Captured(query=query, key=key, mask=None, scaling=scale, causal=False)


def view_of(features, grid, captured=None, projected=None, feature_layer=1, num_vision_layers=2, has_cls=True):
    features = torch.as_tensor(features, dtype=torch.float32)
    if features.dim() == 2:
        features = features[None]
    proj = (lambda x: projected) if projected is not None else (lambda x: x)
    return VisionView(
        features=features,
        cls_feature=features[:, 0],
        grid=grid,
        feature_layer=feature_layer,
        num_vision_layers=num_vision_layers,
        projector=proj,
        captured=captured or {},
        has_cls=has_cls,
    )


def with_cls(patch_logits: torch.Tensor, cls_logit: float = -10.0) -> torch.Tensor:
    """Prepend the [CLS] key's logit to (B, N) patch logits."""
    return torch.cat([torch.full((patch_logits.shape[0], 1), cls_logit), patch_logits], dim=1)


def kept(method, view, keep):
    selection = method.select_vision(view, keep)
    selection.validate(view.batch_size, view.num_tokens, keep, method.name)
    return selection.keep[0].tolist()


# -- VisPruner / FasterVLM ----------------------------------------------------------------------------------------
def twin_pairs_view():
    """12 tokens on a 3x4 grid. [CLS] attention: 5 and 9 on top, then the rest in index order.

    The residual (descending attention) is [0, 1, 2, 3, 4, 6, 7, 8, 10, 11]; the twin pairs (0,1), (2,3),
    (4,6), (7,8) sit at its even/odd positions 0-7, and tokens 10 and 11 are unique (orthogonal features).
    """
    logits = torch.tensor([[2.0 - 0.1 * j for j in range(12)]])
    logits[0, 5], logits[0, 9] = 5.0, 4.5
    eye = torch.eye(8)
    feats = torch.stack([eye[0], eye[0], eye[1], eye[1], eye[2], eye[6], eye[2], eye[3], eye[3], eye[7], eye[4], eye[5]])
    return view_of(feats, (3, 4), {1: planted(with_cls(logits))})


def test_vispruner_keeps_important_tokens_and_drops_planted_twins():
    # keep 8 with ratio 0.25: important = int(2.0) = 2 -> {5, 9}; diverse = 6 of the 10 residual tokens.
    # Round 1 (R=10, drop min(8, 10-6) = 4): A = [0, 2, 4, 7, 10], B = [1, 3, 6, 8, 11]; A's best cosine to B
    # is 1 for the twins 0, 2, 4, 7 and 0 for 10, so those four go; the residual [10, 1, 3, 6, 8, 11] has 6.
    # The twin that survives is the odd-position (lower-attention) one: only the even half is ever pruned.
    method = create_method("vispruner", important_ratio=0.25)
    assert kept(method, twin_pairs_view(), 8) == [1, 3, 5, 6, 8, 9, 10, 11]


def test_vispruner_drops_min_of_step_and_excess_even_when_unique_tokens_go():
    # keep 5 with ratio 0.4: important {5, 9}, diverse 3. Round 1 drops min(8, 10-3) = 7 > |A| = 5, so all of
    # A goes, unique token 10 included (the original slices [r:] of the sorted A). Residual = B = [1, 3, 6, 8, 11]
    # (5 > 3): round 2, A = [1, 6, 11], B = [3, 8]; their twins 0 and 4 are gone, so every redundancy is 0,
    # the stable sort keeps A's order and drops min(8, 5-3) = 2 -> residual [11, 3, 8].
    method = create_method("vispruner", important_ratio=0.4)
    assert kept(method, twin_pairs_view(), 5) == [3, 5, 8, 9, 11]


def test_vispruner_ratio_follows_the_authors_readme_per_budget():
    method = create_method("vispruner")
    assert method.split(128, 576) == (64, 64)
    assert method.split(64, 576) == (48, 16)
    assert method.split(32, 576) == (16, 16)
    assert method.split(320, 2880) == (240, 80)  # 64 per 576-token crop
    assert method.split(160, 2880) == (80, 80)  # README: NeXT 32 x 5 with 0.5
    assert create_method("vispruner", important_ratio=0.6).split(100, 576) == (60, 40)


def test_vispruner_odd_residual_bump_is_lightcompress_workaround():
    assert create_method("vispruner", important_ratio=0.5).split(10, 31) == (5, 5)  # residual 26: even
    assert create_method("vispruner", important_ratio=0.5).split(10, 30) == (5, 5)  # residual 25: odd, 'ceil'
    assert create_method("vispruner", important_ratio=0.5, odd_residual="bump").split(10, 30) == (6, 4)


def reference_vispruner(scores, feats, keep, ratio, step=8):
    """The original's loop on Python lists, one sample (with the ceil fix for odd residuals)."""
    n = len(scores)
    order = sorted(range(n), key=lambda i: (-float(scores[i]), i))
    important = int(keep * ratio)
    diverse = keep - important
    residual = order[important:]
    unit = F.normalize(feats, dim=-1)
    sim = unit @ unit.T
    while diverse > 0:
        r = min(step, len(residual) - diverse)
        if r <= 0:
            break
        a, b = residual[0::2], residual[1::2]
        s = [max(float(sim[i, j]) for j in b) for i in a]
        a = [a[i] for i in sorted(range(len(a)), key=lambda i: -s[i])][r:]
        residual = a + b
    return sorted(order[:important] + (residual if diverse else []))


@pytest.mark.parametrize("num,keep,ratio", [(48, 12, 0.5), (47, 13, 0.5), (64, 9, 0.75), (40, 39, 0.5), (36, 6, 1.0)])
def test_vispruner_vectorised_loop_equals_the_literal_loop(num, keep, ratio):
    gen = torch.Generator().manual_seed(num + keep)
    logits = torch.randn(2, num, generator=gen)
    feats = torch.randn(2, num, 16, generator=gen)
    feats[:, 1::3] = feats[:, ::3][:, : feats[:, 1::3].shape[1]]  # planted duplicates
    view = view_of(feats, (1, num), {1: planted(with_cls(logits))})
    method = create_method("vispruner", important_ratio=ratio)
    got = method.select_vision(view, keep).keep
    scores = view.cls_attention()
    for b in range(2):
        assert got[b].tolist() == reference_vispruner(scores[b], feats[b], keep, ratio)


def test_fastervlm_keeps_the_planted_high_attention_region():
    logits = torch.zeros(1, 16)
    logits[0, [5, 6, 9, 10]] = 3.0  # a 2x2 block in the middle of a 4x4 grid
    logits[0, 0] = 1.0
    view = view_of(torch.randn(1, 16, 8), (4, 4), {1: planted(with_cls(logits))})
    assert kept(create_method("fastervlm"), view, 4) == [5, 6, 9, 10]
    assert kept(create_method("fastervlm"), view, 5) == [0, 5, 6, 9, 10]
    assert kept(create_method("vispruner", important_ratio=1.0), view, 5) == [0, 5, 6, 9, 10]


def test_cls_methods_rank_by_received_attention_on_towers_without_cls():
    # No [CLS] (Qwen2.5-VL): view.importance() = attention received at a full-attention block (LightCompress's
    # port of VisPruner); the planted 2x2 block receives the most.
    logits = torch.zeros(1, 16)
    logits[0, [5, 6, 9, 10]] = 3.0
    view = view_of(torch.randn(1, 16, 8), (4, 4), {1: planted(logits)}, has_cls=False)
    assert kept(create_method("fastervlm"), view, 4) == [5, 6, 9, 10]
    assert kept(create_method("vispruner", important_ratio=1.0), view, 4) == [5, 6, 9, 10]


# -- multi-unit inputs (crops, frames) ----------------------------------------------------------------------------
def two_units(view, units=2):
    per = view.num_tokens // units
    view.num_units = units
    view.unit_of = (torch.arange(view.num_tokens) // per)[None].expand(view.batch_size, -1)
    return view


def test_unit_quotas_split_the_budget_per_crop_like_the_originals():
    from prunebench.views import unit_quotas

    five = view_of(torch.zeros(1, 2880, 2), (24, 24))
    assert unit_quotas(five, 320) is None  # a single-unit view selects globally
    two_units(five, 5)
    assert unit_quotas(five, 320) == [64] * 5
    assert unit_quotas(five, 322) == [65, 65, 64, 64, 64]
    anyres = view_of(torch.zeros(1, 1152, 2), (24, 24))  # base 576 + two unpadded sub-crops of 288
    anyres.num_units, anyres.unit_of = 3, torch.tensor([0] * 576 + [1] * 288 + [2] * 288)[None]
    assert unit_quotas(anyres, 100) == [50, 25, 25]
    assert unit_quotas(anyres, 101) == [51, 25, 25]


def test_fastervlm_keeps_each_crops_share_not_the_global_top():
    # two 4x4 crops; every token of crop 0 outscores every token of crop 1, so a global top-4 would take crop 0
    # only. Per crop (the original on LLaVA-NeXT): the top 2 of each.
    logits = torch.cat([torch.linspace(3, 4, 16), torch.linspace(0, 1, 16)])[None]
    view = two_units(view_of(torch.randn(1, 32, 8), (4, 4), {1: planted(with_cls(logits))}))
    assert kept(create_method("fastervlm"), view, 4) == [14, 15, 30, 31]


def test_vispruner_per_unit_equals_running_each_unit_alone():
    gen = torch.Generator().manual_seed(5)
    logits, feats = torch.randn(1, 72, generator=gen), torch.randn(1, 72, 8, generator=gen)
    feats[:, 1::2] = feats[:, ::2]  # planted twins
    method = create_method("vispruner", important_ratio=0.5)
    whole = two_units(view_of(feats, (6, 6), {1: planted(with_cls(logits))}))
    alone = []
    for u in range(2):
        part = slice(36 * u, 36 * (u + 1))
        sub = view_of(feats[:, part], (6, 6), {1: planted(with_cls(logits[:, part]))})
        alone += [36 * u + i for i in kept(method, sub, 10)]
    assert kept(method, whole, 20) == alone


def test_hiprune_selects_per_crop_on_each_crops_own_grid():
    # two 6x8 crops (tokens 0-47, 48-95), keep 60 = 30 per crop -> one anchor per crop (round(0.6)).
    # Object layer: 19 (crop 0) > 21 (crop 0) > 50 (crop 1, cell 2): per crop the anchors are 19 and 50, not 19
    # and 21. Crop 1's anchor sits in its first row: cell 2 - 8 is clamped to cell 0 of crop 1 (token 48), not
    # token 42 of crop 0 as arithmetic over the concatenated sequence would give.
    # Register layer: attention rises with the index, so crop 0 keeps its 30 only because of its quota.
    num = 96
    object_logits = torch.zeros(1, num)
    object_logits[0, [19, 21, 50]] = torch.tensor([6.0, 5.5, 5.0])
    register_logits = 0.1 * torch.arange(num, dtype=torch.float32)[None]
    captured = {0: planted(with_cls(object_logits)), 1: planted(with_cls(register_logits))}
    view = two_units(view_of(torch.randn(1, num, 8), (6, 8), captured))
    crop0 = {11, 18, 19, 20, 27} | set(range(22, 27)) | set(range(28, 48))
    crop1 = {48, 49, 50, 51, 58} | set(range(71, 96))
    assert kept(create_method("hiprune", object_layer=0), view, 60) == sorted(crop0 | crop1)


def test_hiprune_grid_follows_the_token_map_and_drops_unpadded_neighbours():
    # A unit view whose token_map says where each candidate sits in its crop's tower output ([CLS] at 0, 25
    # tokens per crop on a 3x8 grid): crop 1 lost its first row to unpadding, so for an anchor at its cell 9 the
    # upper neighbour (cell 1) is no candidate and is dropped; the others map to their candidates.
    from prunebench.methods.hiprune import grid_positions, mark_neighbours

    rows, cols = 3, 8
    crop0 = list(range(1, 25))  # tower tokens 1..24 of crop 0 (cells 0..23)
    crop1 = [25 + 1 + c for c in range(8, 24)]  # crop 1 keeps cells 8..23 (its first row was removed)
    view = view_of(torch.randn(1, 40, 4), (rows, cols))
    view.num_units, view.unit_tokens = 2, 25
    view.token_map = torch.tensor(crop0 + crop1)[None]
    view.unit_of = view.token_map // 25
    patch, inverse, cells = grid_positions(view)
    assert cells == 24 and patch[0, 24].item() == 8 and patch[0, -1].item() == 23
    assert inverse[0, 24 + 8].item() == 24 and inverse[0, 24 + 0].item() == -1
    method = create_method("hiprune", edges="clamp")
    anchors = torch.tensor([[25]])  # crop 1, cell 9: neighbours 8, 10, 1 (not a candidate: dropped), 17
    mask = mark_neighbours(anchors, patch, inverse, view.unit_of, cells, method.offsets(cols))
    assert mask[0].nonzero().squeeze(1).tolist() == [24, 25, 26, 33]


# -- DivPrune -----------------------------------------------------------------------------------------------------
def test_divprune_keeps_one_of_each_planted_duplicate_and_the_isolated_token():
    # projected: t0 = t1 = (1, 0), t2 = t3 = (0, 1), t4 = (-1, 0). Nearest-other distances: 0, 0, 0, 0 and
    # min(2, 1) = 1 for t4 -> first pick 4. Distances to {4}: 2, 2, 1, 1 -> pick 0 (first of the tie).
    # Distances to {4, 0}: t1 0, t2 1, t3 1 -> pick 2. Kept in original order: [0, 2, 4].
    projected = torch.tensor([[[1.0, 0], [1, 0], [0, 1], [0, 1], [-1, 0]]])
    features = torch.ones(1, 5, 3)  # all equal: a method reading features instead of projected gets it wrong
    view = view_of(features, (1, 5), projected=projected)
    assert kept(create_method("divprune"), view, 3) == [0, 2, 4]
    assert kept(create_method("divprune", repick="official"), view, 3) == [0, 2, 4]


def test_divprune_duplicate_picks_are_masked_by_default_and_refused_when_official():
    # t0 = t1 = t2 = (1, 0), t3 = (0, 1); keep 3. First pick 3 (the only isolated token), then 0; now every
    # token is at distance 0 from a picked one and the unmasked argmax re-picks token 0.
    projected = torch.tensor([[[1.0, 0], [1, 0], [1, 0], [0, 1]]])
    view = view_of(torch.randn(1, 4, 3), (2, 2), projected=projected)
    from prunebench.methods.divprune import max_min_diversity

    assert max_min_diversity(projected, 3, mask_picked=False)[0].tolist() == [3, 0, 0]
    assert kept(create_method("divprune"), view, 3) == [0, 1, 3]
    with pytest.raises(PruneBenchError, match="picked a token twice.*repick='mask'"):
        create_method("divprune", repick="official").select_vision(view, 3)


def reference_divprune(x, k):
    """The official recomputation: min over all picked rows at every step, first index on ties."""
    unit = F.normalize(x, dim=-1)
    dist = 1 - unit @ unit.T
    isolation = dist.kthvalue(2, dim=0).values
    picked = [int(isolation.argmax())]
    for _ in range(1, k):
        nearest = dist[picked].min(dim=0).values
        picked.append(int(nearest.argmax()))
    return sorted(picked)


def test_divprune_incremental_greedy_equals_the_official_recomputation():
    gen = torch.Generator().manual_seed(3)
    projected = torch.randn(2, 50, 12, generator=gen)
    view = view_of(torch.randn(2, 50, 4), (5, 10), projected=projected)
    got = create_method("divprune").select_vision(view, 17).keep
    for b in range(2):
        assert got[b].tolist() == reference_divprune(projected[b], 17)
    vision = create_method("divprune", space="vision").select_vision(view, 17).keep
    assert vision[0].tolist() == reference_divprune(view.features[0], 17)


# -- HiPrune ------------------------------------------------------------------------------------------------------
def hiprune_view(anchor: int, rows: int = 6, cols: int = 8):
    """Object layer 0: one planted high-attention token ``anchor``; register layer 1: attention rising with index."""
    num = rows * cols
    object_logits = torch.zeros(1, num)
    object_logits[0, anchor] = 5.0
    register_logits = 0.1 * torch.arange(num, dtype=torch.float32)[None]
    captured = {0: planted(with_cls(object_logits)), 1: planted(with_cls(register_logits))}
    return view_of(torch.randn(1, num, 8), (rows, cols), captured, feature_layer=1, num_vision_layers=2)


def test_hiprune_anchor_cross_buffers_then_registers():
    # keep 30, alpha 0.1 -> round(0.6) = 1 anchor: token 19 (row 2, col 3 of a 6x8 grid); cross buffers
    # 18, 20, 11, 27. Registers: the 25 best other tokens at the register layer, whose score rises with the
    # index: 47..28 (20 tokens, 27 already in), then 26, 25, 24, 23, 22. Token 21 is the first left out.
    method = create_method("hiprune", object_layer=0)
    expected = sorted({11, 18, 19, 20, 27} | set(range(22, 27)) | set(range(28, 48)))
    assert kept(method, hiprune_view(19), 30) == expected


@pytest.mark.parametrize(
    "anchor,edges,shape,neighbourhood",
    [
        (2, "clamp", "cross", {0, 1, 2, 3, 10}),  # 2 - 8 = -6 is clamped to token 0 (the code)
        (2, "drop", "cross", {1, 2, 3, 10}),  # the paper's Eq. (5) drops it
        (8, "clamp", "cross", {0, 7, 8, 9, 16}),  # 8 - 1 = 7 wraps to the end of row 0
        (19, "clamp", "row", {18, 19, 20}),
        (19, "clamp", "square", {10, 11, 12, 18, 19, 20, 26, 27, 28}),
    ],
)
def test_hiprune_buffer_neighbourhoods_on_the_grid(anchor, edges, shape, neighbourhood):
    from prunebench.views import mark_neighbours

    method = create_method("hiprune", object_layer=0, edges=edges, buffer=shape)
    scores = hiprune_view(anchor).received_attention(0)
    anchors = scores.topk(1).indices  # the one anchor (alpha 0.1 at 30 tokens)
    position = torch.arange(scores.shape[1])[None]
    mask = mark_neighbours(anchors, position, position, torch.zeros_like(position), scores.shape[1], method.offsets(8), clamp=edges == "clamp")
    assert set(mask[0].nonzero().squeeze(1).tolist()) == neighbourhood
    # the anchor's low-scoring neighbours survive only because of the buffer rule
    chosen = set(kept(method, hiprune_view(anchor), 30))
    assert neighbourhood <= chosen and len(chosen) == 30


def test_hiprune_anchor_counts_match_the_published_table():
    method = create_method("hiprune")
    assert [method.num_anchors(b) for b in (192, 128, 64, 32)] == [4, 3, 1, 1]


def test_hiprune_declares_only_its_two_vit_layers():
    method = create_method("hiprune")
    assert method.vision_layers(24, 22) == (8, 22)  # CLIP-L: l = 9 (1-based) and the feature layer -2
    assert method.vision_layers(3, 1) == (0, 1)  # tiny-llava and toy-llava: 3-layer ViTs, feature layer 1
    assert method.vision_layers(4, 2) == (1, 2)  # a 4-layer ViT: round(9 * 4 / 24) = 2, 1-based
    # the scaled rule on a 32-block ViT gives block 11, a windowed block of Qwen2.5-VL; its family entry names the
    # port's block 15 (full attention), and "feature" is its last block, 31
    assert create_method("hiprune", register_layer="-1").vision_layers(32, 30) == (11, 31)
    from prunebench.models.defaults import resolve_method

    qwen = resolve_method("hiprune", "Qwen/Qwen2.5-VL-7B-Instruct", "qwen2_5_vl")
    assert qwen.vision_layers(32, 31) == (15, 31)
    with pytest.raises(PruneBenchError, match="method_defaults.yaml"):
        create_method("hiprune", object_layer=8).vision_layers(3, 1)


def test_hiprune_reads_received_attention_not_cls_attention():
    # [CLS] attends only to token 40 while every other query attends to the planted anchor 19: HiPrune's
    # received attention (mean over all 49 query rows) still ranks 19 first.
    view = hiprune_view(19)
    cap = view.captured[0]
    cap.key[:, :, 41, 1] = 50.0  # patch 40 is key 41
    cap.query[:, :, 0] = 0
    cap.query[:, :, 0, 1] = 1.0 / cap.scaling
    assert int(view.cls_attention(0).argmax()) == 40
    assert int(view.received_attention(0).argmax()) == 19
    assert {11, 18, 19, 20, 27} <= set(kept(create_method("hiprune", object_layer=0), view, 30))


def test_hiprune_ties_go_to_the_lower_index_in_every_path():
    # every register-layer score equal: after the anchor 19 and its buffers (11, 18, 20, 27), the 25 registers
    # are the lowest other indices, 0..25 without 11 and 18 (torch.topk would return tied indices in kernel order)
    num = 48
    object_logits = torch.zeros(1, num)
    object_logits[0, 19] = 5.0
    captured = {0: planted(with_cls(object_logits)), 1: planted(with_cls(torch.zeros(1, num)))}
    view = view_of(torch.randn(1, num, 8), (6, 8), captured)
    buffered = {11, 18, 19, 20, 27}
    expected = sorted(buffered | set(range(30)) - {11, 18, 19, 20})  # registers 0..10, 12..17, 21..26, 28, 29
    assert len(expected) == 30 and 27 in expected
    method = create_method("hiprune", object_layer=0)
    assert kept(method, view, 30) == expected
    # the same two units side by side: each unit's share follows the same rule on its own tokens
    both = {0: planted(with_cls(object_logits.repeat(1, 2))), 1: planted(with_cls(torch.zeros(1, 2 * num)))}
    units = two_units(view_of(torch.randn(1, 2 * num, 8), (6, 8), both))
    assert kept(method, units, 60) == expected + [num + i for i in expected]
    # tied object scores at 19 and 30: the anchor is 19, the lower one (anchor 30 would keep 31 and 38)
    object_logits[0, 30] = 5.0
    tied = view_of(torch.randn(1, num, 8), (6, 8), {0: planted(with_cls(object_logits)), 1: planted(with_cls(torch.zeros(1, num)))})
    assert kept(method, tied, 30) == expected


def test_hiprune_video_frame_cls_is_never_an_anchor():
    # two frames, each [CLS] + a 4x4 grid, Video-LLaVA style: the [CLS] tokens are candidates (token_map points at
    # tower token 0 of their frame) and receive the most attention at the object layer. Anchors must be patches:
    # the best patch of each frame (cell 5) with its cross buffers; a [CLS] may still be a register.
    from prunebench.views import UnitVisionView

    tokens = 17  # 16 grid cells + [CLS] per frame
    token_map = torch.tensor([u * tokens + t for u in range(2) for t in range(tokens)])[None]
    object_logits = torch.zeros(1, 2 * tokens)
    object_logits[0, [0, tokens]] = 9.0  # the frames' [CLS] keys
    object_logits[0, [1 + 5, tokens + 1 + 5]] = 5.0  # cell 5 of each frame
    register_logits = torch.zeros(1, 2 * tokens)
    register_logits[0, [0, tokens]] = 3.0
    captured = {0: planted(object_logits.view(2, tokens)), 1: planted(register_logits.view(2, tokens))}
    view = UnitVisionView(
        features=torch.randn(1, 2 * tokens, 8),
        grid=(4, 4),
        feature_layer=1,
        num_vision_layers=2,
        projector=lambda x: x,
        captured=captured,
        has_cls=True,
        num_units=2,
        unit_kind="frame",
        unit_of=(token_map // tokens),
        token_map=token_map,
        unit_tokens=tokens,
    )
    method = create_method("hiprune", object_layer=0, alpha=0.5)  # round(8 * 0.5 / 5) = 1 anchor per frame
    got = kept(method, view, 16)
    cross = [1, 4, 5, 6, 9]  # cell 5 and its neighbours 4, 6, 1, 9 on the 4x4 grid (candidate = cell + 1)
    for u in range(2):
        frame = [c - u * tokens for c in got if u * tokens <= c < (u + 1) * tokens]
        assert {1 + c for c in cross} <= set(frame) and 0 in frame  # buffers around the patch; [CLS] as a register


def gather_remove_duplicates(features, residual, target, step=8):
    """The previous implementation (an index per (A, B) pair each round), kept to prove the new one equal."""
    bsz, start = residual.shape
    feats = F.normalize(features.float().gather(1, residual[..., None].expand(-1, -1, features.shape[-1])), dim=-1)
    similarity = (feats @ feats.transpose(1, 2)).view(bsz, start * start)
    current = torch.arange(start).expand(bsz, -1)
    while current.shape[1] > target:
        drop = min(step, current.shape[1] - target)
        a, b = current[:, 0::2], current[:, 1::2]
        pairs = (a[:, :, None] * start + b[:, None, :]).reshape(bsz, -1)
        redundancy = similarity.gather(1, pairs).view(bsz, a.shape[1], b.shape[1]).amax(dim=-1)
        by_redundancy = redundancy.sort(dim=1, descending=True, stable=True).indices
        current = torch.cat([a.gather(1, by_redundancy)[:, drop:], b], dim=1)
    return residual.gather(1, current)


@pytest.mark.parametrize("num,drop_from,target", [(576, 48, 16), (576, 64, 64), (101, 10, 7), (40, 0, 39)])
def test_remove_duplicates_equals_the_pairwise_gather_version(num, drop_from, target):
    from prunebench.methods.vispruner import remove_duplicates

    gen = torch.Generator().manual_seed(num + target)
    features = torch.randn(2, num, 32, generator=gen)
    features[:, 1::4] = features[:, ::4][:, : features[:, 1::4].shape[1]]  # exact duplicates: tied similarities
    residual = torch.stack([torch.randperm(num, generator=gen)[drop_from:] for _ in range(2)])
    assert torch.equal(remove_duplicates(features, residual, target), gather_remove_duplicates(features, residual, target))


def test_vispruner_diverse_step_space_is_selectable():
    # equal attention everywhere: important = 0, 1, 2 (keep 6, ratio 0.5; ties to the lower index), residual
    # [3, 4, 5, 6, 7] -> A = [3, 5, 7], B = [4, 6], drop 2 of A. Features make 3 a twin of 4 (A by redundancy:
    # 3, 5, 7 -> drop 3, 5); projected embeddings make 7 a twin of 6 (7, 3, 5 -> drop 7, 3).
    eye = torch.eye(8)
    feats = torch.stack([eye[0], eye[1], eye[2], eye[3], eye[3], eye[4], eye[5], eye[6]])
    projected = torch.stack([eye[0], eye[1], eye[2], eye[3], eye[4], eye[5], eye[6], eye[6]])[None]
    view = view_of(feats, (2, 4), {1: planted(with_cls(torch.zeros(1, 8)))}, projected=projected)
    assert kept(create_method("vispruner", important_ratio=0.5), view, 6) == [0, 1, 2, 4, 6, 7]
    assert kept(create_method("vispruner", important_ratio=0.5, similarity="projected"), view, 6) == [0, 1, 2, 4, 5, 6]


def test_fastervlm_and_vispruner_at_ratio_one_keep_the_same_set_on_exact_ties():
    """Both rank by the stable rule (equal scores: lower index), so VisPruner with important_ratio = 1 is FasterVLM
    exactly, also where whole plateaus of [CLS] attention tie (the originals' topk / argsort leave ties to the kernel)."""
    logits = torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 2.0, 1.0, 0.0, 1.0, 1.0, 0.0]])
    view = view_of(torch.randn(1, 12, 8), (3, 4), {1: planted(with_cls(logits))})
    expected = [1, 2, 3, 5, 6]  # token 6 (logit 2), then the four lowest indices among the seven tied at 1
    assert kept(create_method("fastervlm"), view, 5) == expected
    assert kept(create_method("vispruner", important_ratio=1.0), view, 5) == expected
