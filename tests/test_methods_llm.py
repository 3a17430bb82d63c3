"""SparseVLM and LearnPruner on hand-built inputs whose kept sets follow from the algorithms by hand.

Attention is planted through hand-made captured q/k: keys are one-hot (key j = e_j), so a query row
q_i = log(w) gives softmax weights proportional to w over the keys the causal mask allows.
Layout of the toy sequence: 0 = BOS, 1..6 = six visual tokens, 7..11 = five text tokens after the image.
"""

from __future__ import annotations

import math

import pytest
import torch

from prunebench.attention import Captured
from prunebench.core import InfeasibleBudget, PlanContext, PruneBenchError, Selection, check_plan_meets_budget
from prunebench.registry import create_method
from prunebench.views import LayerView, RecycledSelection, VisionView, sample_generators

L, VIS, TEXT = 12, list(range(1, 7)), list(range(7, 12))


def captured(weights: torch.Tensor) -> Captured:
    """weights (H, L, L): unnormalised attention wanted per head/row (0 entries get ~0 probability)."""
    heads = weights.shape[0]
    query = torch.log(weights.clamp(min=1e-12))[None]  # (1, H, L, L): dims = keys
    key = torch.eye(L)[None, None].expand(1, heads, L, L).contiguous()
    return Captured(query=query, key=key, mask=None, scaling=1.0, causal=True)


def uniform(heads: int = 1) -> torch.Tensor:
    return torch.ones(heads, L, L)


def layer_view(weights: torch.Tensor, input_embeds: torch.Tensor | None = None, hidden: torch.Tensor | None = None) -> LayerView:
    cos = torch.ones(1, L, L)
    sin = torch.zeros(1, L, L)
    return LayerView(
        layer=3,
        hidden_states=hidden if hidden is not None else torch.randn(1, L, 8, generator=torch.Generator().manual_seed(0)),
        visual_index=torch.tensor([VIS]),
        valid=torch.ones(1, L, dtype=torch.bool),
        position_ids=torch.arange(L)[None],
        captured=captured(weights),
        position_embeddings=(cos, sin),
        input_embeds=input_embeds,
        input_visual_index=torch.tensor([VIS]),
        generators=sample_generators(0, ["s"]),
    )


def rater_embeds() -> torch.Tensor:
    """Visual tokens along e0; text tokens 8 and 10 along e0 too (raters), 7, 9, 11 orthogonal (not raters)."""
    e = torch.zeros(1, L, 4)
    e[0, VIS, 0] = 1.0
    e[0, [8, 10], 0] = 5.0
    e[0, [7, 9, 11], 1] = 5.0
    return e


def planted_rows(weights: torch.Tensor, rows: list[int], targets: list[int], head: int | slice = slice(None), strength: float = 1e4) -> None:
    weights[head, rows] = 1.0
    for t in targets:
        weights[head, rows, t] = strength


# -- SparseVLM ---------------------------------------------------------------------------------------------------
def test_sparsevlm_raters_are_text_tokens_similar_to_the_image():
    view = layer_view(uniform(), rater_embeds())
    rows, is_rater = create_method("sparsevlm").raters(view)
    assert rows[0].tolist() == TEXT
    assert is_rater[0].tolist() == [False, True, False, True, False]


@pytest.mark.parametrize("version", ["1.5", "2.0"])
def test_sparsevlm_keeps_what_the_raters_attend_to(version):
    """Raters (8, 10) attend to visual tokens 2, 3; the other text rows (incl. the last) to 5, 6.
    Averaging over all text rows (3 vs 2 rows) or reading the last row would keep 5, 6."""
    weights = uniform()
    planted_rows(weights, [8, 10], [2, 3])
    planted_rows(weights, [7, 9, 11], [5, 6])
    method = create_method("sparsevlm", version=version, recycle="none")
    sel = method.select_llm(layer_view(weights, rater_embeds()), 2)
    assert sel.keep[0].tolist() == [1, 2]  # visual indices of positions 2, 3


def test_sparsevlm_v2_keeps_the_heads_with_most_rater_mass():
    """Head 0 puts all rater attention on tokens 2, 3; head 1 puts 40 % on BOS and the rest on 5, 6, so the
    single kept head (heads=1) is head 0. Moving the BOS leak to head 0 must switch the choice to head 1."""
    weights = uniform(2)
    planted_rows(weights, [8, 10], [2, 3], head=0)
    planted_rows(weights, [8, 10], [5, 6], head=1)
    weights[1, [8, 10], 0] = 2e4 * 0.4 / 0.6 * 1.0  # BOS absorbs 40 % of head 1
    view = layer_view(weights, rater_embeds())
    assert create_method("sparsevlm", heads=1, rope_correction="none").select_llm(view, 2).keep[0].tolist() == [1, 2]
    # now head 0 leaks to BOS instead and head 1 is clean: the single kept head must be head 1
    weights = uniform(2)
    planted_rows(weights, [8, 10], [2, 3], head=0)
    weights[0, [8, 10], 0] = 2e4 * 0.4 / 0.6
    planted_rows(weights, [8, 10], [5, 6], head=1, strength=3e3)
    view = layer_view(weights, rater_embeds())
    assert create_method("sparsevlm", heads=1, rope_correction="none").select_llm(view, 2).keep[0].tolist() == [4, 5]


def test_sparsevlm_rope_attention_is_ones_vectors_rotated_by_rope():
    """R from the model's cos/sin tables equals q1·k1·scale for all-ones q/k rotated with transformers' RoPE."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    d, theta = 8, 10000.0
    positions = torch.tensor([[0, 3, 4, 9, 10, 15, 20, 21, 22, 23, 24, 30]])
    inv = 1.0 / theta ** (torch.arange(0, d, 2).float() / d)
    angles = positions[..., None].float() * inv
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    view = layer_view(uniform(), rater_embeds())
    view.position_embeddings = (cos, sin)
    view.captured.scaling = d**-0.5
    rows = torch.tensor([TEXT])
    got = create_method("sparsevlm").rope_attention(view, rows)
    ones = torch.ones(1, 1, L, d)
    q, k = apply_rotary_pos_emb(ones, ones, cos, sin)
    want = (q[0, 0, TEXT] @ k[0, 0, VIS].T) * d**-0.5
    torch.testing.assert_close(got[0], want, rtol=1e-5, atol=1e-5)
    # closed form of SparseVLM v2.0's RoPE correction (Gumpest/SparseVLMs @26a5f48): (2/sqrt(d)) Σ_f cos((p_i - p_j) θ_f)
    delta = positions[0, TEXT][:, None, None] - positions[0, VIS][None, :, None]
    torch.testing.assert_close(got[0], 2 * d**-0.5 * (delta * inv).cos().sum(-1), rtol=1e-5, atol=1e-5)


def test_sparsevlm_v2_divides_by_rope_attention():
    """Token 6 gets 1.5x token 2's attention but R is twice as large at token 6: the plain score keeps token 6,
    the divided one (1.5 / 2 = 0.75 of token 2's) keeps token 2."""
    weights = uniform()
    planted_rows(weights, [8, 10], [2])
    planted_rows(weights, [8, 10], [6], strength=1.5e4)
    weights[0, [8, 10], 2] = 1e4
    view = layer_view(weights, rater_embeds())
    cos = torch.ones(1, L, 4)
    cos[0, 6] = 2.0  # R[i, 6] = 2 R[i, j] for every other visual j
    view.position_embeddings = (cos, torch.zeros(1, L, 4))
    assert create_method("sparsevlm", heads=1).select_llm(view, 1).keep[0].tolist() == [1]
    assert create_method("sparsevlm", heads=1, rope_correction="none").select_llm(view, 1).keep[0].tolist() == [5]


def test_sparsevlm_v2_zero_rope_attention_on_a_non_rater_row_does_not_poison_the_scores(monkeypatch):
    """R = 0 in a row that is not a rater must not matter (the original corrects rater rows only); multiplied by
    a 0 weight, inf became NaN in the head mass and every relevance."""
    weights = uniform()
    planted_rows(weights, [8, 10], [2])
    view = layer_view(weights, rater_embeds())
    method = create_method("sparsevlm", heads=1)
    _rows, is_rater = method.raters(view)
    plain = method.relevance(view)
    real = method.rope_attention

    def zero_on_non_raters(v, r):
        out = real(v, r).clone()
        out[~is_rater] = 0.0
        return out

    monkeypatch.setattr(method, "rope_attention", zero_on_non_raters)
    relevance = method.relevance(view)
    assert bool(torch.isfinite(relevance).all()), relevance
    torch.testing.assert_close(relevance, plain)


def graded_rows(weights: torch.Tensor, rows: list[int], strengths: dict[int, float]) -> None:
    """Rows ``rows`` attend to each target t with weight strengths[t] (others 1): distinct relevance."""
    weights[:, rows] = 1.0
    for t, w in strengths.items():
        weights[:, rows, t] = w


# visual tokens 1..6 (visual indices 0..5) with relevance 6 > 5 > 4 > 3 > 2 > 1 in that order
GRADED = {1: 6e3, 2: 5e3, 3: 4e3, 4: 3e3, 5: 2e3, 6: 1e3}


def test_sparsevlm_v15_appends_merged_tokens():
    """Published v1.5 at 3 of 6 tokens: k = 2 kept (visual 0, 1: the highest relevance) + c = 1 merged token.
    The 4 pruned tokens give n1 = int(0.3 * 4) + 1 = 2 candidates, the two most relevant of them (visual 2 and
    3, not 4 or 5), and one cluster: the merged token is their plain mean."""
    weights = uniform()
    graded_rows(weights, [8, 10], GRADED)
    hidden = torch.randn(1, L, 8, generator=torch.Generator().manual_seed(1))
    method = create_method("sparsevlm", version="1.5")
    assert method.llm_position_policy == "renumber" and method.recycling == "append"
    assert method.kept_before_recycling(6, 3) == 2 and method.clusters(4) == (2, 1)
    sel = method.select_llm(layer_view(weights, rater_embeds(), hidden), 3)
    assert sel.keep[0].tolist() == [0, 1] and sel.append.shape == (1, 1, 8)
    torch.testing.assert_close(sel.append[0, 0], (hidden[0, 3] + hidden[0, 4]) / (2 + 1e-6), rtol=1e-5, atol=1e-6)
    with pytest.raises(PruneBenchError, match="renumber"):
        create_method("sparsevlm", version="1.5", recycle="append", positions="original")


def test_sparsevlm_v15_recycles_pruned_tokens_into_centre_slots():
    """In-slot recycling (original positions): the same 2 kept + 1 merged token, the merged one in the slot of
    its cluster centre. With 2 candidates and 1 cluster the k-NN density is exp(0) for both, so the seeded
    noise decides the denser one, whose δ (max distance) equals the other's: the centre is the candidate
    with the larger noise draw."""
    method = create_method("sparsevlm", version="1.5", positions="original")
    assert method.recycling == "inplace"
    weights = uniform()
    graded_rows(weights, [8, 10], GRADED)
    hidden = torch.randn(1, L, 8, generator=torch.Generator().manual_seed(1))
    view = layer_view(weights, rater_embeds(), hidden)
    noise = torch.rand(2, generator=sample_generators(0, ["s"])[0])
    sel = method.select_llm(view, 3)
    assert isinstance(sel, RecycledSelection) and sel.num_tokens == 3
    assert sel.keep[0][~sel.replace[0]].tolist() == [0, 1]
    candidates = [2, 3]  # by descending relevance
    assert sel.keep[0][sel.replace[0]].tolist() == [candidates[int(noise.argmax())]]
    torch.testing.assert_close(sel.values[0][sel.replace[0]][0], (hidden[0, 3] + hidden[0, 4]) / (2 + 1e-6), rtol=1e-5, atol=1e-6)


def reference_dpc_knn(x: torch.Tensor, c: int, noise: torch.Tensor) -> tuple[list[int], list[int]]:
    """SparseVLM v1.5's recycling (Gumpest/SparseVLMs @8435974) step by step on one sample, in plain Python."""
    n, dim = x.shape
    d = [[float((x[i] - x[j]).norm()) / dim**0.5 for j in range(n)] for i in range(n)]
    density = [math.exp(-sum(v**2 for v in sorted(d[i])[:c]) / c) + float(noise[i]) * 1e-6 for i in range(n)]
    far = max(max(row) for row in d)
    delta = [min([d[i][j] for j in range(n) if density[j] > density[i]], default=far) for i in range(n)]
    score = [delta[i] * density[i] for i in range(n)]
    centres = sorted(range(n), key=lambda i: -score[i])[:c]
    assign = [min(range(c), key=lambda k: d[i][centres[k]]) for i in range(n)]
    for k, centre in enumerate(centres):
        assign[centre] = k
    return centres, assign


def test_dpc_knn_finds_planted_clusters():
    from prunebench.methods.sparsevlm import dpc_knn

    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.1 * torch.randn(5, 2, generator=gen) for c in centres])[None]
    _, assign = dpc_knn(x, 3, torch.zeros(1, 15))
    groups = assign[0].view(3, 5)
    assert all(len(set(g.tolist())) == 1 for g in groups) and len(set(groups[:, 0].tolist())) == 3


def test_dpc_knn_centres_maximise_delta_times_density():
    """1-D points 0, 0.1, 0.2, then 3.0, 3.05, then 9 (isolated); two clusters, k = 2 nearest (self included).
    Densities exp(-d_nn² / 2): 0.995 for 0-2 (noise makes 1 the peak of that group), 0.99875 for 3 and 4 (3 the
    global peak), ~1.5e-8 for 9. By density alone the centres would be 3 and 4 (one group); by δ alone 3 (δ =
    the largest distance, 9) and 9 (δ 6). δ·density gives 3 and 1 (δ 2.9 to point 3, against ≤ 0.1 for 0 and 2)."""
    from prunebench.methods.sparsevlm import dpc_knn

    x = torch.tensor([[0.0], [0.1], [0.2], [3.0], [3.05], [9.0]])[None]
    noise = torch.tensor([[0.1, 0.9, 0.2, 0.8, 0.3, 0.5]])
    centres, assign = dpc_knn(x, 2, noise)
    assert sorted(centres[0].tolist()) == [1, 3]
    want_centres, want_assign = reference_dpc_knn(x[0], 2, noise[0])
    assert centres[0].tolist() == want_centres and assign[0].tolist() == want_assign
    gen = torch.Generator().manual_seed(4)
    y, noise = torch.randn(1, 12, 3, generator=gen), torch.rand(1, 12, generator=gen)
    centres, assign = dpc_knn(y, 3, noise)
    assert (centres[0].tolist(), assign[0].tolist()) == reference_dpc_knn(y[0], 3, noise[0])


def test_dpc_knn_forces_each_centre_into_its_own_cluster():
    """Points 0 and 1 coincide and every point is a centre (c = n): by nearest centre both would join the first
    of the two, leaving the other's cluster empty; each centre is forced into its own cluster instead."""
    from prunebench.methods.sparsevlm import dpc_knn

    x = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]])[None]
    centres, assign = dpc_knn(x, 3, torch.tensor([[0.5, 0.2, 0.1]]))
    assert sorted(assign[0].tolist()) == [0, 1, 2]
    assert [int(centres[0, k]) for k in assign[0].tolist()] == [0, 1, 2]


@pytest.mark.parametrize("version", ["2.0", "1.5"])
@pytest.mark.parametrize("budget", [192, 128, 96, 64])
def test_sparsevlm_schedules_meet_the_layer_average(version, budget):
    method = create_method("sparsevlm", version=version)
    plan = method.plan(budget, PlanContext(576, 32, "average"))
    assert sorted(plan.llm) == [3, 7, 16]  # outputs of layers 2, 6, 15 are pruned
    check_plan_meets_budget(plan, budget, "average", "sparsevlm")
    assert abs(plan.average_tokens - budget) <= 1.0
    counts = list(plan.llm.values())
    assert counts == sorted(counts, reverse=True)
    final = method.plan(budget, PlanContext(576, 32, "final"))
    assert final.final_tokens == budget and final.tokens_per_layer()[:3] == [576] * 3


def test_sparsevlm_scaled_schedule_keeps_the_paper_shape():
    """At "192" the authors' v2.0 schedule 300/200/118 averages 206.75 as prunebench counts; the scaled schedule
    keeps its ratios and spends 192 on average."""
    plan = create_method("sparsevlm", schedule="scaled").plan(192, PlanContext(576, 32, "average"))
    k = list(plan.llm.values())
    assert k[0] / k[2] == pytest.approx(300 / 118, rel=0.05) and k[1] / k[2] == pytest.approx(200 / 118, rel=0.05)
    assert plan.average_tokens == pytest.approx(192, abs=0.25)


def test_sparsevlm_authors_64_schedule_is_reachable_on_llava_7b():
    """The authors' v2.0 "64" = (66, 34, 20) at layers 2/6/15 of 32. Layers 0-2 see 576 tokens, 3-6 see 66,
    7-15 see 34, 16-31 see 20: (3*576 + 4*66 + 9*34 + 16*20) / 32 = 81.8125 per layer, 20 after the last cut."""
    ctx = PlanContext(576, 32, "average")
    for schedule in ("auto", "paper"):
        plan = create_method("sparsevlm", schedule=schedule).plan(82, ctx)
        assert plan.llm == {3: 66, 7: 34, 16: 20}
        assert plan.average_tokens == (3 * 576 + 4 * 66 + 9 * 34 + 16 * 20) / 32
        check_plan_meets_budget(plan, 82, "average", "sparsevlm")
    final = create_method("sparsevlm", schedule="paper").plan(20, PlanContext(576, 32, "final"))
    assert final.llm == {3: 66, 7: 34, 16: 20}
    # budget 64 in average mode is the scaled shape at a true 64 ("auto") or refused ("paper")
    scaled = create_method("sparsevlm").plan(64, ctx)
    assert scaled.llm != {3: 66, 7: 34, 16: 20} and scaled.average_tokens == pytest.approx(64, abs=0.25)
    with pytest.raises(InfeasibleBudget, match='"64" measures 81.8125: budget 82'):
        create_method("sparsevlm", schedule="paper").plan(64, ctx)
    with pytest.raises(InfeasibleBudget, match="only for 576 visual tokens"):
        create_method("sparsevlm", schedule="paper").plan(64, PlanContext(2880, 32, "average"))


def test_sparsevlm_v15_schedule_entries_are_top_k_counts_before_merging():
    """v1.5 "64" = (66, 30, 17) kept by top-k; each layer adds c = int(n1 / 10) + 1 merged tokens with
    n1 = int(0.3 * pruned) + 1: 576 -> 66 + (n1 153 -> c 16) = 82; 82 -> 30 + (n1 16 -> c 2) = 32;
    32 -> 17 + (n1 5 -> c 1) = 18. Its layer average (3*576 + 4*82 + 9*32 + 16*18) / 32 = 82.25."""
    from prunebench.methods.sparsevlm import paper_budgets, paper_counts

    assert paper_counts("1.5", 64) == (82, 32, 18) and paper_counts("2.0", 64) == (66, 34, 20)
    assert paper_budgets("1.5")[64] == 82.25 and paper_budgets("1.5", "final")[64] == 18
    method = create_method("sparsevlm", version="1.5", schedule="paper")
    assert method.plan(82, PlanContext(576, 32, "average")).llm == {3: 82, 7: 32, 16: 18}
    assert [method.kept_before_recycling(n, t) for n, t in ((576, 82), (82, 32), (32, 18))] == [66, 30, 17]
    # "192" averages 206.5: served at the integer budget the harness's contract accepts for it, if any (none
    # with a ±0.25 allowance); final mode serves it at its last count, 113
    plan_192 = PlanContext(576, 32, "average").plan(llm={3: 309, 7: 204, 16: 113})
    accepted = []
    for budget in (206, 207):
        try:
            check_plan_meets_budget(plan_192, budget, "average", "sparsevlm")
            accepted.append(budget)
        except InfeasibleBudget:
            pass
    assert method.paper_schedule_budgets(PlanContext(576, 32, "average"))[192] == (accepted[0] if accepted else None)
    assert method.plan(113, PlanContext(576, 32, "final")).llm == {3: 309, 7: 204, 16: 113}


def test_sparsevlm_infeasible_average_and_layers():
    with pytest.raises(InfeasibleBudget, match="budget >= 145"):
        create_method("sparsevlm").plan(64, PlanContext(576, 4, "average"))
    assert create_method("sparsevlm").pruning_layers(4) == (0, 1, 2)
    assert create_method("sparsevlm").pruning_layers(28) == (2, 6, 15)
    with pytest.raises(InfeasibleBudget, match="layers="):
        create_method("sparsevlm", layers="2,6,15").plan(64, PlanContext(576, 8, "final"))
    with pytest.raises(PruneBenchError):
        create_method("sparsevlm", version="1.0")


# -- LearnPruner -------------------------------------------------------------------------------------------------
# R2* = 32 B / (3*12 + 20); R1 = round(3 R2*); R2 = round((32 B - 12 R1) / 20): e.g. B = 64: R2* = 36.57, R1 = 110,
# R2 = round(35.8) = 36; B = 65: R1 = round(111.43) = 111, R2 = round(37.4) = 37 (the re-implementation's split)
@pytest.mark.parametrize("budget,r1,r2", [(192, 329, 110), (128, 219, 73), (65, 111, 37), (64, 110, 36), (32, 55, 18)])
def test_learnpruner_llava7b_budget_split(budget, r1, r2):
    plan = create_method("learnpruner").plan(budget, PlanContext(576, 32, "average"))
    assert (plan.vision, plan.llm) == (r1, {12: r2})
    check_plan_meets_budget(plan, budget, "average", "learnpruner")
    final = create_method("learnpruner").plan(budget, PlanContext(576, 32, "final"))
    assert (final.vision, final.llm) == (min(576, 3 * budget), {12: budget})


def test_learnpruner_caps_r1_and_resolves_r2():
    plan = create_method("learnpruner").plan(400, PlanContext(576, 32, "average"))
    assert plan.vision == 576
    check_plan_meets_budget(plan, 400, "average", "learnpruner")


def hand_lpm(width: int = 4):
    """keep logit = GELU(x0), drop logit = 0: keep probability increases with feature 0."""
    from prunebench.training import LearnedPruningModule

    lpm = LearnedPruningModule(width, 2)
    with torch.no_grad():
        for p in lpm.parameters():
            p.zero_()
        lpm.fc1.weight[0, 0] = 1.0
        lpm.fc2.weight[0, 0] = 1.0
    return lpm


def vision_view(features: torch.Tensor) -> VisionView:
    return VisionView(features=features, grid=(1, features.shape[1]), model_name="hand-built")


def test_learnpruner_lpm_keeps_the_tokens_it_scores_high():
    feats = torch.zeros(1, 10, 4)
    feats[0, :, 0] = torch.tensor([0.1, 3.0, 0.2, 2.0, 0.0, 5.0, 0.3, 0.4, 1.0, 0.5])
    feats[0, :, 1] = torch.arange(10.0)  # makes tokens distinct for the cosine step
    method = create_method("learnpruner", diversity=0.0).use_module(hand_lpm())
    assert method.select_vision(vision_view(feats), 3).keep[0].tolist() == [1, 3, 5]


def test_learnpruner_diversity_skips_duplicates():
    """The LPM picks token 0; tokens 1-4 (near-)duplicate it, 5 is orthogonal, 6 is in between: the two
    diversity tokens are 5 (max similarity 0) and then 6 (0.71), never a duplicate (~1.0)."""
    from prunebench.methods.learnpruner import diversity_fill

    feats = torch.zeros(1, 7, 4)
    feats[0, :5, 0] = torch.tensor([9.0, 8.9, 8.9, 8.9, 8.9])  # feature 0 = LPM score: token 0 first
    feats[0, :5, 2] = 9.0
    feats[0, 5, 3] = 1.0
    feats[0, 6, 2:] = torch.tensor([1.0, 1.0])
    selected = diversity_fill(feats, torch.tensor([[True] + [False] * 6]), 2)
    assert selected[0].nonzero().flatten().tolist() == [0, 5, 6]
    method = create_method("learnpruner", diversity=0.5).use_module(hand_lpm())
    assert method.select_vision(vision_view(feats), 2).keep[0].tolist() == [0, 5]


def test_learnpruner_stage2_averages_text_rows_after_the_image():
    """Text rows 7..11 attend to visual tokens 2, 4 (one of them also to 6, weaker); visual rows and BOS
    attend elsewhere (they must not count)."""
    weights = uniform()
    planted_rows(weights, TEXT, [2, 4])
    weights[0, 11, 6] = 5e3
    planted_rows(weights, VIS, [1])
    sel = create_method("learnpruner").select_llm(layer_view(weights), 2)
    assert sel.keep[0].tolist() == [1, 3]


def test_learnpruner_checkpoint_resolution(tmp_path):
    from prunebench.training import load_lpm, save_lpm

    # positive features: GELU is increasing there (below about -0.75 it is not, which made this test flaky)
    feats = torch.rand(1, 5, 4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(PruneBenchError, match="prunebench train learnpruner --model hand-built"):
        create_method("learnpruner").select_vision(vision_view(feats), 2)
    path = tmp_path / "lpm.safetensors"
    save_lpm(hand_lpm(), path, {"seed": 0})
    loaded = load_lpm(path)
    torch.testing.assert_close(loaded.fc1.weight, hand_lpm().fc1.weight)
    assert (tmp_path / "lpm.json").exists()
    sel = create_method("learnpruner", checkpoint=str(path), diversity=0.0).select_vision(vision_view(feats), 2)
    assert sel.keep[0].tolist() == feats[0, :, 0].topk(2).indices.sort().values.tolist()
    with pytest.raises(PruneBenchError, match="features are 32-d"):
        create_method("learnpruner", checkpoint=str(path)).select_vision(vision_view(torch.randn(1, 5, 32)), 2)
    tiny = create_method("learnpruner")
    view = vision_view(torch.randn(1, 5, 32))
    view.model_name = "tiny-llava"
    assert tiny.select_vision(view, 2).keep.shape == (1, 2)  # seeded random LPM for config-built test models
    assert math.isclose(sum(p.numel() for p in __import__("prunebench.training", fromlist=["x"]).LearnedPruningModule(1024).parameters()), 525_826)


def test_learnpruner_ties_go_to_the_lowest_index_in_both_stages():
    """Equal LPM scores keep the first tokens (torch.topk would return tied indices in kernel order); equal
    text attention keeps the first visual tokens."""
    feats = torch.zeros(1, 40, 4)
    feats[0, :, 1] = torch.arange(40.0)  # distinct tokens, equal feature 0 -> equal keep probability
    method = create_method("learnpruner", diversity=0.0).use_module(hand_lpm())
    assert method.select_vision(vision_view(feats), 10).keep[0].tolist() == list(range(10))
    view = layer_view(uniform())
    view.attention_to_visual = lambda rows, heads="mean": torch.ones(1, rows.shape[1], len(VIS))  # exact ties
    assert create_method("learnpruner").select_llm(view, 3).keep[0].tolist() == [0, 1, 2]


def test_learnpruner_query_rows_are_selectable():
    """Rows 7-10 attend to visual tokens 2 and 4, the last prompt row (11) to 5 and 6: the average over the
    text rows after the image keeps [1, 3], the last row alone (query_rows="last") keeps [4, 5]."""
    weights = uniform()
    planted_rows(weights, [7, 8, 9, 10], [2, 4])
    planted_rows(weights, [11], [5, 6])
    assert create_method("learnpruner").select_llm(layer_view(weights), 2).keep[0].tolist() == [1, 3]
    assert create_method("learnpruner", query_rows="last").select_llm(layer_view(weights), 2).keep[0].tolist() == [4, 5]
    with pytest.raises(PruneBenchError, match="query_rows"):
        create_method("learnpruner", query_rows="all")


def test_learnpruner_lpm_input_and_diversity_space_are_selectable():
    """features rank tokens 1, 3 highest and projected embeddings 0, 2 (feature 0 = the hand LPM's score); the
    LPM reads the space ``lpm_input`` names, and the diversity step ``diversity_space``'s."""
    from prunebench.training import LearnedPruningModule

    feats = torch.zeros(1, 6, 4)
    feats[0, :, 0] = torch.tensor([0.0, 3.0, 0.0, 2.0, 0.0, 0.0])
    projected = torch.zeros(1, 6, 4)
    projected[0, :, 0] = torch.tensor([3.0, 0.0, 2.0, 0.0, 0.0, 0.0])
    projected[0, :, 1] = torch.arange(6.0)
    view = VisionView(features=feats, grid=(1, 6), model_name="hand-built", projector=lambda x: projected)
    on_projected = hand_lpm()
    on_projected.input = "projected"
    assert create_method("learnpruner", diversity=0.0).use_module(hand_lpm()).select_vision(view, 2).keep[0].tolist() == [1, 3]
    method = create_method("learnpruner", diversity=0.0, lpm_input="projected").use_module(on_projected)
    assert method.select_vision(view, 2).keep[0].tolist() == [0, 2]
    with pytest.raises(PruneBenchError, match="reads vision features but lpm_input='projected'"):
        create_method("learnpruner", lpm_input="projected").use_module(hand_lpm()).select_vision(view, 2)
    with pytest.raises(PruneBenchError, match="hidden width is 2"):
        create_method("learnpruner", lpm_hidden=8).use_module(hand_lpm()).select_vision(view, 2)
    # the diversity token after the LPM's token 1: by features every other token is orthogonal to it except 3
    # (cosine 1 between (3, 0) and (2, 0)) and the all-zero ones (cosine 0, first: 0); by projected, token 1
    # (0, 1) is closest to 2..5 ((2, 2), (0, 3), ...) and orthogonal only to 0 (3, 0) -> also 0; use token 5
    # instead: make it the only token orthogonal to 1 in the projected space
    projected[0, 0, 1] = 1.0  # now 0 = (3, 1): not orthogonal to 1 = (0, 1)
    projected[0, 5] = torch.tensor([5.0, 0.0, 0.0, 0.0])
    lpm = create_method("learnpruner", diversity=0.5).use_module(hand_lpm())
    assert lpm.select_vision(view, 2).keep[0].tolist() == [0, 1]
    assert create_method("learnpruner", diversity=0.5, diversity_space="projected").use_module(hand_lpm()).select_vision(view, 2).keep[0].tolist() == [1, 5]
    assert LearnedPruningModule(4, input="projected").input == "projected"


def test_learnpruner_auto_layer_rounds_halves_up():
    method = create_method("learnpruner")
    assert [method.cut(depth) for depth in (32, 28, 6, 4)] == [12, 11, 2, 2]  # 12 L / 32 = 12, 10.5, 2.25, 1.5


def test_learnpruner_checks_the_lpm_against_the_models_vision_weights(tiny_llava, samples, tmp_path):
    from prunebench.training import VISION_DIGEST_KEY, LearnedPruningModule, save_lpm, vision_digest

    view = tiny_llava.encode(tiny_llava.prepare(samples[:1]))
    view.model_name = "tiny-llava"
    width = view.features.shape[-1]
    lpm = LearnedPruningModule(width)
    right = vision_digest(tiny_llava.model)
    for name, recipe in (
        ("right", {VISION_DIGEST_KEY: right}),
        ("wrong", {VISION_DIGEST_KEY: "0" * 64}),
        ("legacy", {"base_weights_sha256": "1" * 64}),
        ("none", {}),
    ):
        save_lpm(lpm, tmp_path / f"{name}.safetensors", recipe)

    def pick(name, **kw):
        return create_method("learnpruner", checkpoint=str(tmp_path / f"{name}.safetensors"), **kw).select_vision(view, 8)

    assert pick("right").keep.shape == (1, 8) and pick("none").keep.shape == (1, 8)
    for name in ("wrong", "legacy"):
        with pytest.raises(PruneBenchError, match="prunebench train learnpruner --model tiny-llava"):
            pick(name)
    assert pick("wrong", verify=False).keep.shape == (1, 8)
    # the digest covers the vision tower and projector only: changing an LLM weight keeps it, a ViT weight does not
    with torch.no_grad():
        llm_weight = tiny_llava.model.model.language_model.layers[0].mlp.up_proj.weight
        vit_weight = (
            tiny_llava.model.model.vision_tower.vision_model.post_layernorm.weight
            if hasattr(tiny_llava.model.model.vision_tower, "vision_model")
            else next(tiny_llava.model.model.vision_tower.parameters())
        )
        llm_weight.add_(1.0)
        try:
            assert vision_digest(tiny_llava.model) == right
            vit_weight.add_(1.0)
            try:
                assert vision_digest(tiny_llava.model) != right
            finally:
                vit_weight.sub_(1.0)
        finally:
            llm_weight.sub_(1.0)


# -- engine: recycled tokens at an LLM stage ----------------------------------------------------------------------
def test_engine_writes_recycled_values_into_kept_slots(tiny_llava, samples):
    """A RecycledSelection whose values are the tokens' own hidden states is a plain selection; zero values
    change the output; SparseVLM v1.5 (recycling) keeps the token contract and cached = recomputed."""
    from dataclasses import dataclass

    from prunebench.conformance import check_cache, check_token_contract
    from prunebench.core import SingleCutLLMPruner, top_k
    from prunebench.engine import Pruner

    @dataclass
    class Recycler(SingleCutLLMPruner):
        scale: float = 1.0
        name = "recycler"

        def select_llm(self, view, keep):
            kept = top_k(-view.visual_index.float(), keep)  # the first `keep` visual tokens
            if self.scale < 0:
                return Selection(kept)
            rows = view.visual_index.gather(1, kept)
            values = view.hidden_states.gather(1, rows[..., None].expand(-1, -1, view.hidden_states.shape[-1])) * self.scale
            return RecycledSelection(kept, values=values, replace=torch.ones_like(kept, dtype=torch.bool))

    batch = tiny_llava.prepare(samples[:2])

    def logits(method):
        with Pruner(tiny_llava, method, 64, budget_mode="final") as pruner:
            return pruner.generate(batch, max_new_tokens=2, min_new_tokens=2, output_logits=True).logits[0]

    plain, same, zero = logits(Recycler(scale=-1.0)), logits(Recycler(scale=1.0)), logits(Recycler(scale=0.0))
    torch.testing.assert_close(plain, same)
    assert (plain - zero).abs().max() > 1e-4
    method = create_method("sparsevlm", version="1.5")
    for check in (check_token_contract, check_cache):
        passed, detail = check(tiny_llava, method, samples, 64)
        assert passed, detail


def test_engine_renumbers_positions_per_layer_for_v15(tiny_llava, samples):
    """SparseVLM v1.5 after its cuts at layers 1, 2, 3: each layer sees positions 0..n'-1 in prefill and the
    first generated token at n' (its own cache length), n' = that layer's prompt length."""
    from prunebench.engine import Pruner

    seen: dict[int, list[torch.Tensor]] = {}
    layers = tiny_llava.decoder_layers()
    method = create_method("sparsevlm", version="1.5")
    with Pruner(tiny_llava, method, 64, budget_mode="final") as pruner:
        handles = [
            layers[i].register_forward_pre_hook(lambda m, a, kw, i=i: seen.setdefault(i, []).append(kw["position_ids"].clone()), with_kwargs=True)
            for i in (0, 2, 3)
        ]
        try:
            out = pruner.generate(tiny_llava.prepare(samples[:1]), max_new_tokens=2, min_new_tokens=2)
        finally:
            for h in handles:
                h.remove()
    prompt = out.stats.prompt_tokens
    for i in (2, 3):
        length = out.stats.text_tokens + out.stats.tokens_per_layer[i]
        assert seen[i][0][0].tolist() == list(range(length))
        assert seen[i][1][0].tolist() == [length]
    assert seen[0][0][0].tolist() == list(range(prompt)) and seen[0][1][0].tolist() == [prompt]


def test_text_queries_from_input_keep_image_newlines_out_after_the_image_tail_was_pruned():
    """Input: BOS, text, visual 2 3, newline 4, visual 5 6, newline 7, text 8-11. A stage pruned 5 and 6, so the
    current sequence is visual 2 3, newlines 4 5, text 6-9: counted from the last *remaining* visual token the
    newline at 4 would be text; SparseVLM's raters are read from the input's image end (rows 5-9)."""
    view = LayerView(
        layer=3,
        hidden_states=torch.zeros(1, 10, 4),
        visual_index=torch.tensor([[2, 3]]),
        valid=torch.ones(1, 10, dtype=torch.bool),
        input_embeds=torch.zeros(1, 12, 4),
        input_visual_index=torch.tensor([[2, 3, 5, 6]]),
    )
    assert view.text_queries()[0][0].tolist() == [4, 5, 6, 7, 8, 9]
    rows, valid = view.text_queries(from_input=True)
    assert rows[0].tolist() == [5, 6, 7, 8, 9] and bool(valid.all())
