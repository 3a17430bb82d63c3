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
    # closed form of methods-1.md §2.2: (2/sqrt(d)) Σ_f cos((p_i - p_j) θ_f)
    delta = positions[0, TEXT][:, None, None] - positions[0, VIS][None, :, None]
    torch.testing.assert_close(got[0], 2 * d**-0.5 * (delta * inv).cos().sum(-1), rtol=1e-5, atol=1e-5)


def test_sparsevlm_v2_divides_by_rope_attention():
    """Equal attention to tokens 2 and 6; R twice as large at token 6, so the divided score keeps token 2."""
    weights = uniform()
    planted_rows(weights, [8, 10], [2, 6])
    view = layer_view(weights, rater_embeds())
    cos = torch.ones(1, L, 4)
    cos[0, 6] = 2.0  # R[i, 6] = 2 R[i, j] for every other visual j
    view.position_embeddings = (cos, torch.zeros(1, L, 4))
    assert create_method("sparsevlm", heads=1).select_llm(view, 1).keep[0].tolist() == [1]
    assert create_method("sparsevlm", heads=1, rope_correction="none").select_llm(view, 1).keep[0].tolist() in ([1], [5])


def test_sparsevlm_v15_appends_merged_tokens():
    """Published v1.5: 3 kept + 1 merged token (the mean of its cluster) appended after the kept ones."""
    weights = uniform()
    planted_rows(weights, [8, 10], [2, 3, 4])
    hidden = torch.randn(1, L, 8, generator=torch.Generator().manual_seed(1))
    method = create_method("sparsevlm", version="1.5")
    assert method.llm_position_policy == "renumber" and method.recycling == "append"
    sel = method.select_llm(layer_view(weights, rater_embeds(), hidden), 4)
    assert sel.keep[0].tolist() == [1, 2, 3] and sel.append.shape == (1, 1, 8)
    # n1 = 1 candidate: the pruned token with the highest rel; with uniform rows it is one of 0, 4, 5
    assert any(torch.allclose(sel.append[0, 0], hidden[0, 1 + j]) for j in (0, 4, 5))
    with pytest.raises(PruneBenchError, match="renumber"):
        create_method("sparsevlm", version="1.5", recycle="append", positions="original")


def test_sparsevlm_v15_recycles_pruned_tokens_into_centre_slots():
    method = create_method("sparsevlm", version="1.5", recycle="inplace", positions="original")
    n, total = 6, 4
    k = method.kept_before_recycling(n, total)
    n1, c = method.clusters(n - k)
    assert k + c == total and (k, n1, c) == (3, 1, 1)
    weights = uniform()
    planted_rows(weights, [8, 10], [2, 3, 4])
    hidden = torch.randn(1, L, 8, generator=torch.Generator().manual_seed(1))
    sel = method.select_llm(layer_view(weights, rater_embeds(), hidden), total)
    assert isinstance(sel, RecycledSelection) and sel.num_tokens == total
    kept_plain = sel.keep[0][~sel.replace[0]].tolist()
    assert kept_plain == [1, 2, 3]
    centre = sel.keep[0][sel.replace[0]].tolist()
    assert len(centre) == 1 and centre[0] in (0, 4, 5)
    # one candidate (n1 = 1): the merged token is that candidate's own hidden state
    torch.testing.assert_close(sel.values[0][sel.replace[0]][0], hidden[0, 1 + centre[0]], rtol=1e-5, atol=1e-5)


def test_dpc_knn_finds_planted_clusters():
    from prunebench.methods.sparsevlm import dpc_knn

    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.1 * torch.randn(5, 2, generator=gen) for c in centres])[None]
    _, assign = dpc_knn(x, 3, torch.zeros(1, 15))
    groups = assign[0].view(3, 5)
    assert all(len(set(g.tolist())) == 1 for g in groups) and len(set(groups[:, 0].tolist())) == 3


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


def test_sparsevlm_schedule_keeps_the_paper_shape():
    """At "192" the authors' v2.0 schedule 300/200/118 averages 206.75 by input counting; the plan keeps its
    ratios and scales it down to average 192."""
    plan = create_method("sparsevlm").plan(192, PlanContext(576, 32, "average"))
    k = list(plan.llm.values())
    assert k[0] / k[2] == pytest.approx(300 / 118, rel=0.05) and k[1] / k[2] == pytest.approx(200 / 118, rel=0.05)
    assert k[0] < 300


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
@pytest.mark.parametrize("budget,r1,r2", [(192, 330, 110), (128, 219, 73), (64, 111, 37), (32, 54, 18)])
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

    feats = torch.randn(1, 5, 4)
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
        handles = [layers[i].register_forward_pre_hook(
            lambda m, a, kw, i=i: seen.setdefault(i, []).append(kw["position_ids"].clone()), with_kwargs=True) for i in (0, 2, 3)]
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
