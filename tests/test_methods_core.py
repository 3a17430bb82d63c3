"""FastV, VisionZip and random pruning on hand-built views whose kept sets follow from the papers' algorithms by hand.

FastV views plant LLM attention through one-hot keys (key j = e_j, scaling 1), so a query row
``log(w)`` gives softmax weights proportional to ``w`` over the keys the mask allows. VisionZip views plant
[CLS] attention in key component 0 (the [CLS] query is ``e_0 * C``, so logits are ``C * k_0``) and the merge
geometry in the other key components, where component 0 (of size logit / C) is negligible for the cosines.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from prunebench.attention import Captured
from prunebench.core import PlanContext
from prunebench.engine import Pruner
from prunebench.registry import create_method
from prunebench.views import LayerView, VisionView, sample_generators

# -- FastV -------------------------------------------------------------------------------------------------------
# Two samples of a left-padded batch, L = 12, four visual tokens each, at different offsets:
#   sample 0: 0-1 padding, 2 BOS, 3-6 visual, 7-11 text;   sample 1: 0 BOS, 1-4 visual, 5-11 text.
# Each sample has four planted visual tokens a, b, c, d (local indices differ per sample):
#   last row (11), head 0: a 0.6, c 0.4;  head 1: b 0.55, d 0.45   -> head-mean a .30, b .275, d .225, c .20
#   every other text row after the image: c 0.5, d 0.5 (both heads)
# FastV (last row, head-mean, top 2) keeps {a, b}. Head 0 alone would keep {a, c}, head 1 alone {b, d}, the
# lowest scores {c, d}, and the mean over all query rows {c, d} (see test_fastv_paper_variant_...).
L, N = 12, 4
SPANS = [[3, 4, 5, 6], [1, 2, 3, 4]]
LETTERS = [dict(a=0, c=1, b=2, d=3), dict(c=0, b=1, d=2, a=3)]  # local index of each letter per sample
PADDING = [2, 0]


def fastv_view(strength: float = 1e4) -> LayerView:
    weights = torch.ones(2, 2, L, L)  # (B, H, query, key)
    for b, (span, at) in enumerate(zip(SPANS, LETTERS)):
        pos = {name: span[i] for name, i in at.items()}
        last = weights[b, :, L - 1]
        last[0, pos["a"]], last[0, pos["c"]] = 0.6 * strength, 0.4 * strength
        last[1, pos["b"]], last[1, pos["d"]] = 0.55 * strength, 0.45 * strength
        for row in range(span[-1] + 1, L - 1):
            weights[b, :, row, pos["c"]] = weights[b, :, row, pos["d"]] = 0.5 * strength
    valid = torch.ones(2, L, dtype=torch.bool)
    for b, pad in enumerate(PADDING):
        valid[b, :pad] = False
    mask = torch.ones(L, L, dtype=torch.bool).tril()[None, None] & valid[:, None, None, :]  # causal, no padding keys
    captured = Captured(query=torch.log(weights), key=torch.eye(L).expand(2, 2, L, L).contiguous(), mask=mask, scaling=1.0, causal=True)
    return LayerView(
        layer=2,
        hidden_states=torch.zeros(2, L, 8),
        visual_index=torch.tensor(SPANS),
        valid=valid,
        captured=captured,
        generators=sample_generators(0, ["s0", "s1"]),
    )


def locals_of(letters: str) -> list[list[int]]:
    return [sorted(at[x] for x in letters) for at in LETTERS]


def test_fastv_keeps_the_top_last_row_head_mean_scores_at_each_samples_span():
    selection = create_method("fastv").select_llm(fastv_view(), 2)
    selection.validate(2, N, 2, "fastv")
    assert selection.keep.tolist() == locals_of("ab")  # [[0, 2], [1, 3]]
    for wrong in ("ac", "bd", "cd"):  # one head only, or the lowest scores
        assert selection.keep.tolist() != locals_of(wrong)


def test_fastv_paper_variant_averages_every_query_row():
    """Mean over all 12 rows (head-mean): sample 0 sums a 1.75, b .89, c 3.15, d 2.59 (4 text rows give c, d
    0.5 each; visual rows attend causally and uniformly; all-masked padding rows spread 1/12); sample 1
    (6 text rows) a .50, b 1.06, c 4.48, d 3.68. The paper's wording keeps {c, d}, the code's {a, b}."""
    assert create_method("fastv", query="mean").select_llm(fastv_view(), 2).keep.tolist() == locals_of("cd")


def test_fastv_reads_layer_k_minus_1_and_cuts_before_layer_k():
    for layer in (1, 2, 5):
        method = create_method("fastv", layer=layer)
        plan = method.plan(64, PlanContext(576, 8, "final"))
        assert plan.llm == {layer: 64} and plan.vision is None
        assert method.llm_signal_layers(plan) == (layer - 1,)
        assert plan.tokens_per_layer() == [576] * layer + [64] * (8 - layer)


def test_fastv_average_mode_solves_the_layer_average_by_hand():
    # K = 2 of 32, N = 576: (2 * 576 + 30 * keep) / 32 = 128 -> keep = (4096 - 1152) / 30 = 98.13 -> 98
    plan = create_method("fastv").plan(128, PlanContext(576, 32, "average"))
    assert plan.llm == {2: 98}


def test_fastv_on_tiny_llava_matches_eager_attention_of_layer_k_minus_1(tiny_llava, samples):
    """A left-padded batch of three prompts: each sample's kept set is the top-16 of the eager head-mean
    attention of its last prompt token at layer 1, over its own image span located from the image tokens."""
    batch = tiny_llava.prepare(samples)
    assert len(set((batch.attention_mask == 0).sum(1).tolist())) > 1  # really padded, spans at different offsets
    with Pruner(tiny_llava, create_method("fastv", layer=2), 16, budget_mode="final") as pruner:
        kept = pruner.generate(batch, max_new_tokens=1).stats.kept["layer2"]
    model = tiny_llava.model
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.inference_mode():
            probs = model(**batch.inputs, output_attentions=True).attentions[1].float()
    finally:
        model.set_attn_implementation(previous)
    span = (batch.input_ids == tiny_llava.image_token_id).nonzero()[:, 1].view(len(samples), -1)
    assert span.shape[1] == 576
    last_row = probs[:, :, -1].mean(1).gather(1, span)  # (B, 576)
    assert kept.tolist() == last_row.topk(16).indices.sort().values.tolist()
    # the test can tell: the mean over every query row would keep other tokens
    every_row = probs.mean(1).mean(1).gather(1, span)
    assert kept.tolist() != every_row.topk(16).indices.sort().values.tolist()


# -- VisionZip ---------------------------------------------------------------------------------------------------
BIG = 1e4  # [CLS] query scale: attention logits = BIG * key[..., 0]


def planted_vit(cls_logits: torch.Tensor, geometry: torch.Tensor) -> Captured:
    """ViT q/k whose [CLS] row has logits ``cls_logits`` (B, H, T) and whose keys point along ``geometry`` (B, T, g)."""
    bsz, heads, tokens = cls_logits.shape
    key = torch.zeros(bsz, heads, tokens, 1 + geometry.shape[-1])
    key[..., 0] = cls_logits / BIG
    key[..., 1:] = geometry[:, None]
    query = torch.zeros(bsz, heads, tokens, key.shape[-1])
    query[:, :, 0, 0] = BIG
    return Captured(query=query, key=key, mask=None, scaling=1.0, causal=False)


def vit_view(features, captured, has_cls=True, cls_feature=None, importance_layer=None) -> VisionView:
    return VisionView(
        features=features,
        cls_feature=cls_feature,
        grid=(1, features.shape[1]),
        feature_layer=1,
        num_vision_layers=2,
        projector=lambda x: x,
        captured={1: captured},
        has_cls=has_cls,
        importance_layer=importance_layer,
    )


def test_visionzip_splits_the_budget_as_the_paper():
    method = create_method("visionzip")
    assert [method.split(b) for b in (64, 128, 192)] == [(54, 10), (108, 20), (162, 30)]  # Table 8
    assert create_method("visionzip", dominant=40).split(64) == (40, 24)


def hand_view() -> tuple[VisionView, torch.Tensor]:
    """10 patches (+ [CLS] at tower index 0). [CLS] weights over the 11 keys, per head (others 1):
         head 0: patch 7 -> 40, patch 5 -> 30, patch 2 -> 20      (sum 98)
         head 1: patch 2 -> 40, patch 4 -> 35, patch 7 -> 15      (sum 98)
    Summed over heads: 2 .612, 7 .561, 4 .367, 5 .316: the two dominant patches are {2, 7} (head 0 alone would
    pick {5, 7}, head 1 alone {2, 4}). Key geometry: targets will be 0 (e1) and 5 (e2); members 1 (e1 + .1 e2),
    4 (e1 + .5 e2) and 9 (e1) join 0; 3 (e2), 6 (.3 e1 + e2) and 8 (e2) join 5."""
    weights = torch.ones(2, 11)
    for head, picks in enumerate([{7: 40, 5: 30, 2: 20}, {2: 40, 4: 35, 7: 15}]):
        for patch, w in picks.items():
            weights[head, 1 + patch] = w
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    geometry = {0: e1, 1: e1 + 0.1 * e2, 3: e2, 4: e1 + 0.5 * e2, 5: e2, 6: 0.3 * e1 + e2, 8: e2, 9: e1, 2: e1, 7: e2}
    keys = torch.stack([torch.tensor([1.0, 1.0])] + [geometry[j] for j in range(10)])[None]  # [CLS] first
    features = torch.eye(12)[None, 1:11] * 10  # patch j = 10 * e_{j+1}; [CLS] = e_0
    cls = torch.eye(12)[None, 0]
    return vit_view(features, planted_vit(torch.log(weights)[None], keys), cls_feature=cls), features


def test_visionzip_dominant_by_summed_cls_attention_and_target_plus_mean_merge():
    view, feats = hand_view()
    selection = create_method("visionzip", dominant=3, contextual=2).select_vision(view, 5)
    selection.validate(1, 10, 5, "visionzip")
    assert selection.keep.tolist() == [[2, 7]]  # [CLS] + 2 patches = 3 dominant tokens
    torch.testing.assert_close(selection.prepend, view.cls_feature[:, None])
    # rest = [0, 1, 3, 4, 5, 6, 8, 9], step 8 // 2 = 4: targets rest[0] = 0 and rest[4] = 5
    f = feats[0]
    want = torch.stack([f[0] + (f[1] + f[4] + f[9]) / 3, f[5] + (f[3] + f[6] + f[8]) / 3])
    torch.testing.assert_close(selection.append[0], want)
    joint = create_method("visionzip", dominant=3, contextual=2, merge="average").select_vision(view, 5)
    torch.testing.assert_close(joint.append[0], torch.stack([(f[0] + f[1] + f[4] + f[9]) / 4, (f[5] + f[3] + f[6] + f[8]) / 4]))


def test_visionzip_gives_each_crop_its_share_of_the_dominant_patches():
    """VisionZip (``dvlab-research/VisionZip`` @3151f6d) runs per crop with the same D; here each unit keeps its
    share of the dominant patches, ranked by its own crop's [CLS] attention, instead of one global top-k."""
    view, _ = hand_view()
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5, 0.1, 0.3, 0.2, 0.4, 0.05]])  # crop 0 outscores crop 1 everywhere
    view.cls_attention = lambda layer=None, heads="mean": scores
    single = create_method("visionzip", dominant=5, contextual=0).select_vision(view, 5)
    assert single.keep.tolist() == [[0, 1, 2, 3]]  # one image: the global top 4 ([CLS] is the fifth)
    view.num_units, view.unit_of = 2, torch.tensor([[0] * 5 + [1] * 5])
    per_crop = create_method("visionzip", dominant=5, contextual=0).select_vision(view, 5)
    assert per_crop.keep.tolist() == [[0, 1, 6, 8]]  # two per crop: 0, 1 of crop 0; 8 (.4), 6 (.3) of crop 1


def test_visionzip_empty_cluster_is_its_target_alone():
    view, feats = hand_view()
    # 3 targets over rest [0, 1, 3, 4, 5, 6, 8, 9] at step 8 // 3 = 2: 0, 3, 5. Targets 3 and 5 both point
    # along e2 (5's key also carries its tiny [CLS]-logit component), so every e2-member joins 3, the first
    # maximum; target 5 gets no member and is itself alone: target + 0 (member count clamped to 1).
    selection = create_method("visionzip", dominant=3, contextual=3).select_vision(view, 6)
    f = feats[0]
    torch.testing.assert_close(selection.append[0], torch.stack([f[0] + (f[1] + f[4] + f[9]) / 3, f[3] + (f[6] + f[8]) / 2, f[5]]))


def reference_visionzip(hidden: torch.Tensor, scores: torch.Tensor, keys: torch.Tensor, dominant: int, contextual: int) -> torch.Tensor:
    """VisionZip's ``utils.py`` (@3151f6d) literally, one image: ``hidden`` (577, D) with [CLS] at 0, ``scores`` (576,) summed [CLS]
    attention, ``keys`` (577, d) head-mean keys. Returns the D + C tokens in output order."""
    top = [int(i) + 1 for i in scores.topk(dominant - 1).indices]
    dom = sorted({0, *top})
    rest = [i for i in range(hidden.shape[0]) if i not in dom]
    unit = F.normalize(keys[rest], dim=-1)
    step = max(1, len(rest) // contextual)
    tgt = list(range(0, len(rest), step))[:contextual]
    members: dict[int, list[int]] = {t: [] for t in tgt}
    for o in range(len(rest)):
        if o not in members:
            sims = [float(unit[o] @ unit[t]) for t in tgt]
            members[tgt[sims.index(max(sims))]].append(o)
    ctx = [hidden[rest[t]] + (torch.stack([hidden[rest[o]] for o in members[t]]).mean(0) if members[t] else 0) for t in tgt]
    return torch.stack([hidden[i] for i in dom] + ctx)


@pytest.mark.parametrize("budget, rest, step", [(64, 523, 52), (128, 469, 23), (192, 415, 13)])
def test_visionzip_equals_the_literal_algorithm_on_576_patches(budget, rest, step):
    gen = torch.Generator().manual_seed(budget)
    logits = torch.randn(1, 2, 577, generator=gen) * 3
    geometry = torch.randn(1, 577, 8, generator=gen)
    hidden = torch.randn(1, 577, 16, generator=gen)
    view = vit_view(hidden[:, 1:], planted_vit(logits, geometry), cls_feature=hidden[:, 0])
    method = create_method("visionzip")
    dominant, contextual = method.split(budget)
    assert 577 - dominant == rest and rest // contextual == step  # VisionZip @3151f6d
    selection = method.select_vision(view, budget)
    selection.validate(1, 576, budget, "visionzip")
    got = torch.cat([selection.prepend, hidden[:, 1:].gather(1, selection.keep[..., None].expand(-1, -1, 16)), selection.append], 1)
    scores = torch.softmax(logits[0], dim=-1)[:, 1:].sum(0)  # summed over heads, softmax over all 577 keys
    keys = view.captured[1].key.mean(1)[0]  # VisionZip's metric: the layer's keys, head-mean, [CLS] included
    torch.testing.assert_close(got[0], reference_visionzip(hidden[0], scores, keys, dominant, contextual))


def test_visionzip_without_cls_ranks_by_received_attention_and_prepends_nothing():
    """No [CLS] (Qwen2.5-VL-like): every query row has the same planted logits, so received attention equals
    softmax(v); the 3 dominant tokens are the 3 largest v, and all 3 are patches."""
    v = torch.tensor([[0.0, 2.0, 0.5, 3.0, 0.1, 1.5, 0.2, 0.3]])
    key = torch.zeros(1, 2, 8, 4)
    key[..., 0] = v[:, None]
    key[..., 1:] = torch.randn(1, 1, 8, 3, generator=torch.Generator().manual_seed(0))
    query = torch.zeros(1, 2, 8, 4)
    query[..., 0] = 1.0
    view = vit_view(torch.randn(1, 8, 6), Captured(query, key, None, 1.0, False), has_cls=False, importance_layer=1)
    selection = create_method("visionzip", dominant=3, contextual=1).select_vision(view, 4)
    assert selection.keep.tolist() == [[1, 3, 5]] and selection.prepend is None and selection.append.shape == (1, 1, 6)


# -- random ------------------------------------------------------------------------------------------------------
def random_view(ids: list[str], seed: int = 0, tokens: int = 32) -> VisionView:
    return VisionView(features=torch.zeros(len(ids), tokens, 4), grid=(1, tokens), generators=sample_generators(seed, ids))


def kept_random(ids, seed=0, keep=8):
    selection = create_method("random").select_vision(random_view(ids, seed), keep)
    selection.validate(len(ids), 32, keep, "random")
    return selection.keep.tolist()


def test_random_is_seeded_per_sample_and_independent_of_batch_mates():
    alone = kept_random(["a"])[0]
    assert kept_random(["a"]) == [alone]  # same seed, same sample: same set
    assert kept_random(["b", "a"])[1] == alone and kept_random(["a", "c", "d"])[0] == alone  # batch-mates never matter
    assert kept_random(["a"], seed=1)[0] != alone  # another seed
    assert kept_random(["b"])[0] != alone  # another sample
    assert len(set(map(tuple, kept_random([f"s{i}" for i in range(20)])))) == 20


def test_random_keeps_every_token_equally_often():
    """400 samples keep 8 of 32 tokens: each token is kept 100 times in expectation (sd 8.7); a rule that
    favoured some positions (first k, a fixed permutation) would put counts at 0 or 400."""
    kept = torch.tensor(kept_random([f"sample-{i}" for i in range(400)]))
    counts = torch.bincount(kept.flatten(), minlength=32)
    assert int(counts.sum()) == 400 * 8
    assert 60 <= int(counts.min()) and int(counts.max()) <= 140, counts.tolist()


def test_random_budget_contract_is_the_vision_stage():
    plan = create_method("random").plan(64, PlanContext(576, 4, "average"))
    assert plan.vision == 64 and not plan.llm and math.isclose(plan.average_tokens, 64)
