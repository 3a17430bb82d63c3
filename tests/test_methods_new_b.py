"""Hand-built tests of PyramidDrop, CDPruner (and the views' instruction and layer-attention signals they read):
each expected selection follows from the algorithm by hand, so a wrong algorithm fails."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import nn

from prunebench.core import InfeasibleBudget, PlanContext, check_plan_meets_budget
from prunebench.models import TINY_MODELS
from prunebench.registry import create_method
from prunebench.views import Instruction, LayerView, VisionView, sample_generators


# -- CDPruner ---------------------------------------------------------------------------------------------------
class WordTokenizer:
    """Maps each whitespace word to a fixed id (what Instruction needs from a tokenizer)."""

    def __init__(self, words):
        self.ids = {w: i for i, w in enumerate(words)}

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [self.ids[w] for w in text.split()]}


def embedding(rows):
    layer = nn.Embedding(len(rows), len(rows[0]))
    layer.weight.data = torch.tensor(rows, dtype=torch.float32)
    return layer


E1, E2, E3 = [1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]
TOKENIZER = WordTokenizer(["red", "blue", "noise"])
EMBED = embedding([E1, E2, E3])  # "red" = e1, "blue" = e2


def dpp_view(projected: torch.Tensor, questions: list[str]) -> VisionView:
    bsz, n, _ = projected.shape
    view = VisionView(features=projected.clone(), grid=(1, n), projector=lambda x: x, has_cls=False, instruction=Instruction(questions, TOKENIZER, EMBED))
    view.generators = sample_generators(0, [f"s{i}" for i in range(bsz)])
    return view


def planted_tokens() -> torch.Tensor:
    """Tokens 0 and 1: the same vector along e1 (the "red" direction), a planted duplicate; 2 and 3 along e2;
    4: e1 + 0.5 e3, relevant to "red" but not a copy of token 0; 5: e3."""
    return torch.tensor([[E1, E1, E2, E2, [1.0, 0, 0.5, 0], E3]])


def test_cdpruner_picks_the_tokens_relevant_to_the_instruction_and_never_a_duplicate():
    # relevance to "red" (cosine with e1): 1, 1, 0, 0, 0.894, 0 -> min-max r ≈ 1, 1, 1e-6, 1e-6, 0.894, 1e-6.
    # step 1: largest r_i² S_ii -> token 0 (first of the tied 0/1); step 2: gains r_i²(1 - S_0i²): token 1 (a copy)
    # 0, token 4 0.894²·0.2 = 0.16, the rest ~1e-12 -> token 4.
    view = dpp_view(planted_tokens(), ["red"])
    assert create_method("cdpruner").select_vision(view, 2).keep.tolist() == [[0, 4]]
    # asking for "blue" moves the choice to the e2 tokens: one of the pair (2), then the most diverse (4 or 5 ...)
    blue = create_method("cdpruner").select_vision(dpp_view(planted_tokens(), ["blue"]), 1).keep.tolist()
    assert blue == [[2]]


def test_cdpruner_relevance_sign_negative_avoids_the_instruction_tokens():
    # the CLIP-path sign: relevance = -cos, so the e1 tokens get r ≈ 0 and the picks come from the others
    view = dpp_view(planted_tokens(), ["red"])
    kept = create_method("cdpruner", relevance_sign="negative").select_vision(view, 2).keep[0].tolist()
    assert 0 not in kept and 1 not in kept and kept == [2, 5]


def test_cdpruner_pure_diversity_when_the_instruction_says_nothing():
    # "noise" = e3: tokens 0-3 have cos 0, token 4 0.447, token 5 1 -> r = 1e-6-ish for 0-3.
    # With an empty question every relevance is equal (constant row -> r = 1): a plain similarity DPP, which takes
    # token 0 first (tie), then the orthogonal e2 token 2, then e3 (token 5), never the copies 1 / 3.
    view = dpp_view(planted_tokens(), [""])
    assert create_method("cdpruner").select_vision(view, 3).keep.tolist() == [[0, 2, 5]]


def naive_greedy(kernel: torch.Tensor, k: int) -> list[int]:
    """Greedy MAP by brute force: add the item that maximises log det of the selected kernel."""
    chosen: list[int] = []
    for _ in range(k):
        best, best_value = None, -math.inf
        for i in range(kernel.shape[0]):
            if i in chosen:
                continue
            index = torch.tensor(chosen + [i])
            value = torch.logdet(kernel[index][:, index].double()).item()
            if value > best_value + 1e-9:
                best, best_value = i, value
        chosen.append(best)
    return sorted(chosen)


def test_greedy_map_equals_brute_force_log_det_greedy_per_sample():
    from prunebench.methods.cdpruner import greedy_map

    gen = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(3, 12, 16, generator=gen), dim=-1)
    r = torch.rand(3, 12, generator=gen) + 0.1
    kernel = r[:, :, None] * (x @ x.transpose(1, 2)) * r[:, None, :]
    got = greedy_map(kernel, 6)
    for b in range(3):
        assert got[b].tolist() == naive_greedy(kernel[b], 6)
        assert greedy_map(kernel[b : b + 1], 6)[0].tolist() == got[b].tolist()  # batched == alone


def test_cdpruner_batch_equals_each_sample_alone():
    gen = torch.Generator().manual_seed(1)
    projected = torch.randn(2, 30, 4, generator=gen)
    together = create_method("cdpruner").select_vision(dpp_view(projected, ["red", "blue noise"]), 7).keep
    for b, question in enumerate(["red", "blue noise"]):
        alone = create_method("cdpruner").select_vision(dpp_view(projected[b : b + 1], [question]), 7).keep
        assert alone[0].tolist() == together[b].tolist()


def test_cdpruner_strips_the_answer_format_suffix_like_the_authors_loader():
    view = dpp_view(planted_tokens(), ["red\nAnswer the question using a single word or phrase."])
    assert create_method("cdpruner").questions(view) == ["red"]
    assert create_method("cdpruner", strip_suffixes=False).questions(view)[0].endswith("phrase.")


@functools.cache
def _adapter(name):
    from prunebench.models import load_model

    return load_model(name)


@pytest.mark.parametrize("model", sorted(TINY_MODELS))  # every family's adapter must hand its view the instruction
def test_instruction_embedding_from_the_adapter_is_per_sample_under_left_padding(model):
    from prunebench.adapters.base import Sample
    from prunebench.conformance import QUESTIONS, synthetic_samples

    adapter = _adapter(model)
    first = synthetic_samples(family=adapter.family)[0]
    samples = [first, Sample(id="other", question=QUESTIONS[2], image=first.image, video=first.video)]
    assert len(samples[0].question.split()) != len(samples[1].question.split())  # different lengths: padding differs
    with torch.inference_mode():
        together = adapter.encode(adapter.prepare(samples))
        assert together.instruction.texts == [s.question for s in samples]
        embedded = together.instruction.embedding()
        for b, sample in enumerate(samples):
            alone = adapter.encode(adapter.prepare([sample])).instruction.embedding()
            assert torch.equal(alone[0], embedded[b])
            ids = adapter.processor.tokenizer(sample.question, add_special_tokens=False)["input_ids"]
            expected = adapter.model.get_input_embeddings()(torch.tensor(ids)).float().mean(0)
            assert torch.allclose(embedded[b], expected)
    assert isinstance(samples[0], Sample)


def test_cdpruner_clip_path_chunks_long_questions_and_uses_the_negative_sign():
    """The original's text side on a tiny CLIPModel: 77-token chunks, one vector each, relevance = -cos mean."""
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

    words = [f"w{i}" for i in range(200)]

    class ClipTokenizer(WordTokenizer):
        def __call__(self, text, truncation=False, add_special_tokens=True):
            return {"input_ids": [1] + [self.ids[w] + 3 for w in text.split()] + [2]}

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=CLIPTextConfig(
            vocab_size=210,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=77,
            eos_token_id=2,
            bos_token_id=1,
            pad_token_id=0,
        ),
        vision_config=CLIPVisionConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14),
        projection_dim=6,
    )
    clip = CLIPModel(config).eval()
    method = create_method("cdpruner", text_encoder="clip").use_clip(clip, ClipTokenizer(words))
    gen = torch.Generator().manual_seed(3)
    view = VisionView(
        features=torch.randn(1, 9, 8, generator=gen), grid=(3, 3), projector=lambda x: x, has_cls=True, instruction=Instruction([" ".join(words[:100])])
    )  # 102 ids -> 2 chunks
    image, text, valid = method._clip_embeddings(view, method.questions(view))
    assert text.shape == (1, 2, 6) and valid.tolist() == [[1.0, 1.0]]
    with torch.inference_mode():
        ids = torch.tensor([1] + [i + 3 for i in range(100)] + [2] + [0] * 52).view(2, 77)
        expected = clip.get_text_features(input_ids=ids)
        expected = getattr(expected, "pooler_output", expected)
    assert torch.allclose(text[0], expected.float(), atol=1e-6)
    cosine = (torch.nn.functional.normalize(image, dim=-1) @ torch.nn.functional.normalize(text, dim=-1).transpose(1, 2)).mean(-1)
    r = method.relevance(view)
    low, high = (-cosine).min(), (-cosine).max()
    assert torch.allclose(r, (-cosine - low + 1e-6) / (high - low), atol=1e-6)


# -- PyramidDrop -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("budget,counts", [(192, [312, 156, 78]), (128, [184, 92, 46]), (64, [56, 28, 14])])
def test_pdrop_average_mode_solves_the_first_ratio_with_halving_stages(budget, counts):
    # layers (2, 10, 20) of 32, N = 576: average = (2·576 + 8 n1 + 10 n2 + 12 n3) / 32 with n = ρ·576·[1, 1/2, 1/4];
    # 128 -> ρ = 0.3194: 184, 92, then n3 = (4096 - 1152 - 1472 - 920) / 12 = 46 (the circulating "128" config)
    ctx = PlanContext(576, 32, "average")
    plan = create_method("pdrop").plan(budget, ctx)
    assert plan.llm == dict(zip((2, 10, 20), counts))
    check_plan_meets_budget(plan, budget, "average", "pdrop")


def test_pdrop_paper_layers_reproduce_the_readme_configuration_and_refuse_low_budgets():
    method = create_method("pdrop", layers="paper")
    plan = method.plan(270, PlanContext(576, 32, "average"))  # (8·576 + 8·288 + 8·144 + 8·72) / 32 = 270
    assert plan.llm == {8: 288, 16: 144, 24: 72}
    with pytest.raises(InfeasibleBudget, match="cannot go below 145"):  # (8·576 + 24) / 32 = 144.75
        method.plan(128, PlanContext(576, 32, "average"))
    verbatim = create_method("pdrop", layers="8,16,24", ratios="0.5,0.25,0.125")
    assert verbatim.plan(270, PlanContext(576, 32, "average")).llm == {8: 288, 16: 144, 24: 72}
    assert verbatim.plan(72, PlanContext(576, 32, "final")).llm == {8: 288, 16: 144, 24: 72}
    with pytest.raises(InfeasibleBudget, match="meet budget 270"):
        verbatim.plan(192, PlanContext(576, 32, "average"))


def test_pdrop_final_mode_and_depth_scaling():
    assert create_method("pdrop").plan(64, PlanContext(576, 32, "final")).llm == {2: 256, 10: 128, 20: 64}
    assert create_method("pdrop", layers="paper").cuts(28) == (7, 14, 21)  # Qwen2.5-VL's 28 layers
    assert create_method("pdrop").cuts(4) == (1, 2, 3)


class StubAttention(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.q_proj, self.k_proj, self.head_dim, self.scaling = nn.Identity(), nn.Identity(), width, 1.0


class StubLayer(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.input_layernorm, self.self_attn = nn.Identity(), StubAttention(width)


def test_pdrop_ranks_by_the_last_tokens_attention_at_the_layer_about_to_run():
    # one head, identity norm/projections, no rotation: logit(last, j) = h_last · h_j. Sequence: 2 text, 6 visual,
    # 2 text; visual tokens 1 and 4 are planted along the last token's direction (logit 4), the others orthogonal.
    width = 4
    hidden = torch.zeros(1, 10, width)
    hidden[0, :, 1] = 1.0
    hidden[0, -1] = torch.tensor([2.0, 0, 0, 0])
    hidden[0, 2 + 1, 0] = hidden[0, 2 + 4, 0] = 2.0
    ones = torch.ones(1, 10, width)
    view = LayerView(
        layer=3,
        hidden_states=hidden,
        visual_index=torch.arange(2, 8)[None],
        valid=torch.ones(1, 10, dtype=torch.bool),
        position_embeddings=(ones, torch.zeros_like(ones)),
        decoder_layer=StubLayer(width),
    )
    assert create_method("pdrop").select_llm(view, 2).keep.tolist() == [[1, 4]]
    probs = view.layer_attention(view.last_index)[0, 0, 0]
    expected = torch.softmax(hidden[0] @ hidden[0, -1], dim=0)
    assert torch.allclose(probs, expected)
    # padding: a padded key gets no attention even if it matches
    view.valid = view.valid.clone()
    view.valid[0, 2 + 1] = False
    assert create_method("pdrop").select_llm(view, 1).keep.tolist() == [[4]]


@pytest.mark.parametrize("model", ["tiny-llava", "tiny-qwen2_5_vl"])
def test_layer_attention_equals_eager_attention_of_the_layer_about_to_run(model):
    """At PyramidDrop's first cut nothing has been dropped in the LLM yet: layer_attention(last row) must equal the
    model's eager attention probabilities of that very layer over the same LLM input."""
    from prunebench.conformance import _eager, _Intercept, synthetic_samples
    from prunebench.engine import Pruner
    from prunebench.models.defaults import resolve_method

    adapter = _adapter(model)
    method = resolve_method("pdrop", model, adapter.family)
    samples = [s for s in synthetic_samples(family=adapter.family) if s.image is not None][:2]
    seen = {}

    def select_llm(view, keep):
        if not seen:
            seen.update(layer=view.layer, probs=view.layer_attention(view.last_index))
        return method.select_llm(view, keep)

    batch = adapter.prepare(samples[:1])
    with Pruner(adapter, method, 16, budget_mode="final") as pruner:
        pruner.method = _Intercept(method, select_llm=select_llm)
        out = pruner.generate(batch, max_new_tokens=1)
    llm = out.llm_inputs
    with torch.inference_mode(), _eager(adapter.model):
        eager = (
            adapter.model(inputs_embeds=llm.inputs_embeds, attention_mask=llm.attention_mask, position_ids=llm.position_ids, output_attentions=True)
            .attentions[seen["layer"]]
            .float()
        )
    assert torch.allclose(seen["probs"][:, :, 0], eager[:, :, -1], atol=1e-5)


def test_pdrop_renumbers_positions_and_counts_per_stage_on_a_real_model():
    from prunebench.conformance import synthetic_samples
    from prunebench.engine import Pruner
    from prunebench.models.defaults import resolve_method

    adapter = _adapter("tiny-llava")
    method = resolve_method("pdrop", "tiny-llava", adapter.family)
    batch = adapter.prepare(synthetic_samples(family="llava")[:2])
    with Pruner(adapter, method, 32, budget_mode="final") as pruner:
        out = pruner.generate(batch, max_new_tokens=2)
    assert out.stats.tokens_per_layer == [576, 128, 64, 32]  # cuts before layers 1, 2, 3: 4·32, 2·32, 32
    assert out.contract_ok, out.stats.contract_detail
    assert method.llm_position_policy == "renumber"


# -- VScan --------------------------------------------------------------------------------------------------------
def test_vscan_windows_cut_the_grid_in_four_by_four_with_leftovers_in_the_last_row_and_column():
    from prunebench.methods.vscan import window_ids

    ids = window_ids(24, 24).view(24, 24)
    assert torch.bincount(ids.flatten()).tolist() == [36] * 16
    assert ids[0, 5] == 0 and ids[0, 6] == 1 and ids[23, 23] == 15
    odd = window_ids(9, 9).view(9, 9)  # 9 // 4 = 2: rows 0-1, 2-3, 4-5, 6-8
    assert odd[8, 8] == 15 and odd[6, 0] == 12 and odd[5, 5] == 10


@pytest.mark.parametrize("budget,t1,t2", [(64, 96, 32), (128, 192, 64), (192, 288, 96)])
def test_vscan_budget_is_the_layer_average_of_both_stages(budget, t1, t2):
    plan = create_method("vscan").plan(budget, PlanContext(576, 32, "average"))
    assert (plan.vision, plan.llm) == (t1, {16: t2})  # (16·T1 + 16·T2)/32 with T2 = T1/3: 64 -> the README's 96/32
    assert create_method("vscan").plan(64, PlanContext(576, 32, "final")).llm == {16: 64}


class PlantedView(VisionView):
    """[CLS] attention planted per ViT layer (layer 0 = local scan, layer 1 = global scan)."""

    planted: dict = None

    def cls_attention(self, layer=None, heads="mean"):
        return self.planted[self.feature_layer if layer is None else layer]


def test_vscan_keeps_each_windows_local_peak_then_the_global_peaks():
    # 8x8 grid -> 16 windows of 2x2. T1 = 40: k = int(40/2) // 16 = 1 local token per window, then 40 - 16 = 24 global.
    # local layer: in window w the planted peak is its bottom-right cell; global layer: cells 0..23 in raster order
    # decrease, everything else 0, so the global scan takes the 24 first raster cells not already taken.
    from prunebench.methods.vscan import window_ids

    windows = window_ids(8, 8)
    local = torch.zeros(1, 64)
    bottom_right = [(2 * (w // 4) + 1) * 8 + 2 * (w % 4) + 1 for w in range(16)]
    local[0, bottom_right] = 1.0
    global_ = torch.zeros(1, 64)
    global_[0, :40] = torch.linspace(1.0, 0.5, 40)
    view = PlantedView(features=torch.randn(1, 64, 4), grid=(8, 8), feature_layer=1, num_vision_layers=3, projector=lambda x: x, has_cls=True)
    view.planted = {0: local, 1: global_}
    method = create_method("vscan", local_layer=0, merge=False)
    kept = method.select_vision(view, 40).keep[0].tolist()
    globals_ = [i for i in range(64) if i not in bottom_right][:24]
    assert kept == sorted(bottom_right + globals_)
    assert all(int(windows[i]) == w for w, i in enumerate(bottom_right))


def test_vscan_merges_each_dropped_token_into_its_most_similar_kept_token_after_the_projector():
    from prunebench.methods.vscan import VScan

    projected = torch.tensor([[[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.2, 1.0], [0.0, 3.0]]])
    keep = torch.tensor([[0, 2]])
    merged = VScan.merged(projected, keep, torch.zeros(1, 5, dtype=torch.long))
    assert torch.allclose(merged[0, 0], (projected[0, 0] + projected[0, 1]) / 2)  # token 1 -> 0
    assert torch.allclose(merged[0, 2], (projected[0, 2] + projected[0, 3] + projected[0, 4]) / 3)  # 3, 4 -> 2
    assert torch.equal(merged[0, 1], projected[0, 1])  # dropped rows are never read


# -- downsample ---------------------------------------------------------------------------------------------------
def test_downsample_grid_is_an_exact_factorisation_closest_to_the_aspect():
    from prunebench.methods.downsample import grid_for_budget

    assert grid_for_budget(64, 9, 9) == (8, 8)
    assert grid_for_budget(64, 8, 11) == (8, 8)  # log aspect: 8x8 is 0.32 away, 4x16 1.07
    assert grid_for_budget(48, 4, 12) == (4, 12)  # 1:3 wanted: 4x12 exactly (6x8 is log 2.25 away)
    assert grid_for_budget(61, 9, 9) == (61, 1)  # a prime budget can only be a strip (ties: more rows)


def test_downsample_resizes_qwen_images_to_exactly_the_budget_and_refuses_fixed_resolution_families():
    from prunebench.conformance import synthetic_samples
    from prunebench.core import UnsupportedModel
    from prunebench.engine import Pruner

    adapter = _adapter("tiny-qwen2_5_vl")
    samples = [s for s in synthetic_samples(family="qwen2_5_vl") if s.image is not None][:2]  # 81 and 88 tokens
    method = create_method("downsample")
    assert method.preprocess(samples[0], 81, adapter) is samples[0]  # at its own count: untouched
    resized = method.preprocess(samples[1], 30, adapter)
    assert resized.image.size == (6 * 28, 5 * 28)  # 308x224 px = 11x8 merged tokens, aspect 8:11 -> 5x6
    with Pruner(adapter, method, 30, budget_mode="final") as pruner:
        out = pruner.generate(adapter.prepare(samples), max_new_tokens=2)
    for i in range(2):
        assert out.sample_stats(i).tokens_per_layer == [30] * 4
    assert out.contract_ok
    with pytest.raises(UnsupportedModel, match="fixed-size input"):
        method.preprocess(samples[0], 30, _adapter("tiny-llava"))


def test_downsample_runs_on_every_dynamic_resolution_family():
    """Qwen3-VL resizes like Qwen2.5-VL (32 px merge units): downsample keeps exactly the budget there too."""
    from prunebench.conformance import synthetic_samples
    from prunebench.engine import Pruner

    adapter = _adapter("tiny-qwen3_vl")
    assert adapter.dynamic_resolution
    samples = [s for s in synthetic_samples(family=adapter.family) if s.image is not None][:2]
    with Pruner(adapter, create_method("downsample"), 24, budget_mode="final") as pruner:
        out = pruner.generate(adapter.prepare(samples), max_new_tokens=2)
    assert out.contract_ok and all(out.sample_stats(i).tokens_per_layer == [24] * 4 for i in range(2))
