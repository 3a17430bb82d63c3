"""The hook interface, budget contract, selection checks and registry (issue 2)."""

import dataclasses
from collections.abc import Sequence

import pytest
import torch

from prunebench.attention import Captured
from prunebench.bases import ScoredLLMPruner, ScoredVisionPruner
from prunebench.core import (
    BudgetError,
    InfeasibleBudget,
    Plan,
    PlanContext,
    PruneBenchError,
    Selection,
    SelectionError,
    SingleCutLLMPruner,
    VisionStagePruner,
    average_tolerance,
    check_budget,
    check_plan_meets_budget,
    solve_single_cut,
)
from prunebench.engine import Pruner
from prunebench.registry import _REGISTRY, UnknownMethodError, create_method, list_methods, method_info, register_method


# -- budget contract -----------------------------------------------------------------------------------------
def test_plan_counts_tokens_per_layer():
    plan = Plan(num_visual=576, num_layers=4, vision=128, llm={2: 32})
    assert plan.tokens_per_layer() == [128, 128, 32, 32]
    assert plan.final_tokens == 32 and plan.average_tokens == 80


def test_single_cut_average_mode_solves_the_layer_average():
    ctx = PlanContext(num_visual=576, num_layers=32, mode="average")
    keep = solve_single_cut(192, ctx, cut=2)
    plan = ctx.plan(llm={2: keep})
    assert keep == round((192 * 32 - 2 * 576) / 30) == 166
    assert abs(plan.average_tokens - 192) < 0.5


def test_single_cut_average_mode_reports_unreachable_budgets():
    ctx = PlanContext(num_visual=576, num_layers=32, mode="average")
    with pytest.raises(InfeasibleBudget, match="cannot go below 37"):
        solve_single_cut(32, ctx, cut=2)  # FastV at K=2 cannot average 32 tokens: layers 0-1 see all 576


def test_single_cut_final_mode_keeps_the_budget():
    assert solve_single_cut(32, PlanContext(576, 32, "final"), cut=2) == 32


def test_plan_that_misses_its_budget_is_infeasible():
    with pytest.raises(InfeasibleBudget):
        check_plan_meets_budget(Plan(576, 4, vision=100), 64, "final", "m")
    with pytest.raises(InfeasibleBudget):
        check_plan_meets_budget(Plan(576, 4, llm={2: 64}), 64, "average", "m")  # averages 320
    check_plan_meets_budget(Plan(576, 4, llm={2: 64}), 64, "final", "m")


def test_average_mode_is_exact_for_plans_that_prune_only_before_the_llm():
    check_plan_meets_budget(Plan(576, 4, vision=64), 64, "average", "m")
    for wrong in (63, 65):
        with pytest.raises(InfeasibleBudget, match="must keep exactly the budget"):
            check_plan_meets_budget(Plan(576, 4, vision=wrong), 64, "average", "m")
    with pytest.raises(InfeasibleBudget):
        check_plan_meets_budget(Plan(576, 4), 64, "average", "m")  # no stage at all


def test_average_mode_accepts_only_the_nearest_integer_count_after_the_last_cut():
    # FastV K=2 of 32, N=576, budget 192: keep = (192*32 - 2*576) / 30 = 166.4. 166 averages 191.625 (miss .375);
    # the tolerance is half a step of the last stage, 30 / (2*32) = .469; 167 misses by .5625, 165 by 1.3125.
    assert average_tolerance(Plan(576, 32, llm={2: 166})) == 30 / 64
    check_plan_meets_budget(Plan(576, 32, llm={2: 166}), 192, "average", "fastv")
    for off_by_one in (165, 167):
        with pytest.raises(InfeasibleBudget, match="nearest-integer"):
            check_plan_meets_budget(Plan(576, 32, llm={2: off_by_one}), 192, "average", "fastv")
    # two stages, 6 layers, cut at 2: with R1 = 114 the nearest R2 is (64*6 - 2*114) / 4 = 39 (exact);
    # R2 = 38 averages 63.33, a miss of .667 > 4/12
    check_plan_meets_budget(Plan(576, 6, vision=114, llm={2: 39}), 64, "average", "m")
    with pytest.raises(InfeasibleBudget, match="kept from layer 2 on"):
        check_plan_meets_budget(Plan(576, 6, vision=114, llm={2: 38}), 64, "average", "m")


# (model, family, LLM depth): the tiny models, the shipped toy model, 7B LLaVA and Qwen2.5-VL (per-model defaults apply)
DEPTHS = [("tiny-llava", "llava", 4), ("toy-llava", "llava", 6), ("llava-hf/llava-1.5-7b-hf", "llava", 32), ("Qwen/Qwen2.5-VL-7B-Instruct", "qwen2_5_vl", 28)]


def _builtin_plan_cells():
    from prunebench.registry import list_methods

    for model, family, depth in DEPTHS:
        for name in list_methods():
            for budget in (32, 64, 128, 192):
                yield pytest.param(model, family, depth, name, budget, id=f"{name}-{model.split('/')[-1]}-{budget}")


@pytest.mark.parametrize("model, family, depth, name, budget", list(_builtin_plan_cells()))
def test_builtin_plans_meet_the_budget_contract(model, family, depth, name, budget):
    """Every built-in method at the budgets of the tests and the demo, on 576 tokens, in both modes: a plan is
    either reported infeasible or meets the contract (the engine would refuse it otherwise)."""
    from prunebench.models.defaults import resolve_method

    method = resolve_method(name, model, family)
    for mode in ("final", "average"):
        try:
            plan = method.plan(budget, PlanContext(576, depth, mode))
        except InfeasibleBudget:
            assert mode == "average", f"{name} cannot keep {budget} tokens in final mode"
            continue
        check_plan_meets_budget(plan, budget, mode, name)


@pytest.mark.parametrize("budget", [0, -3, 2.5, "64", True, None])
def test_bad_budgets_are_rejected_with_the_fix(budget):
    with pytest.raises(BudgetError, match="positive integer"):
        check_budget(budget, 576)


def test_budget_above_visual_tokens_names_the_limit():
    with pytest.raises(BudgetError, match="exceeds the 576 visual tokens.*<= 576"):
        check_budget(700, 576)
    assert check_budget(576, 576) == 576


# -- selections ---------------------------------------------------------------------------------------------------
def test_selection_validation_catches_wrong_count_range_and_order():
    good = Selection(torch.tensor([[0, 5, 9]]))
    good.validate(1, 10, 3, "m")
    with pytest.raises(SelectionError, match="plan keeps 4"):
        good.validate(1, 10, 4, "m")
    with pytest.raises(SelectionError, match=r"\[0, 8\)"):
        good.validate(1, 8, 3, "m")
    with pytest.raises(SelectionError, match="ascending"):
        Selection(torch.tensor([[5, 0, 9]])).validate(1, 10, 3, "m")
    with pytest.raises(SelectionError, match="ascending"):
        Selection(torch.tensor([[1, 1, 9]])).validate(1, 10, 3, "m")
    merged = Selection(torch.tensor([[1, 2]]), append=torch.zeros(1, 2, 8))
    merged.validate(1, 10, 4, "m")


@dataclasses.dataclass
class _WrongCount(VisionStagePruner):
    def select_vision(self, view, keep):
        return Selection(torch.arange(keep + 1).expand(view.batch_size, -1))


@dataclasses.dataclass
class _OutOfRange(VisionStagePruner):
    def select_vision(self, view, keep):
        return Selection(torch.arange(view.num_tokens - keep + 5, view.num_tokens + 5).expand(view.batch_size, -1))


def test_engine_rejects_budget_above_the_image(tiny_llava, samples):
    with Pruner(tiny_llava, create_method("random"), 1000) as pruner, pytest.raises(BudgetError, match="exceeds the 576"):
        pruner.generate(tiny_llava.prepare(samples[:1]), max_new_tokens=1)


@dataclasses.dataclass
class _LLMWrongCount(SingleCutLLMPruner):
    def select_llm(self, view, keep):
        return Selection(torch.arange(keep + 1).expand(view.batch_size, -1))


@dataclasses.dataclass
class _LLMOutOfRange(SingleCutLLMPruner):
    def select_llm(self, view, keep):  # positions in the sequence instead of indices among the visual tokens
        return Selection(view.visual_index[:, -keep:] + 3)


@pytest.mark.parametrize(
    "cls, message",
    [
        (_WrongCount, r"vision stage: the plan keeps 16 tokens but the selection holds 17 \(17 kept \+ 0 merged\); return exactly"),
        (_OutOfRange, r"vision stage: indices must lie in \[0, 576\), got .* candidate visual tokens"),
        (_LLMWrongCount, r"layer 2: the plan keeps 16 tokens but the selection holds 17 \(17 kept \+ 0 merged\); return exactly"),
        (_LLMOutOfRange, r"layer 2: indices must lie in \[0, 576\), got .* candidate visual tokens"),
    ],
)
def test_engine_checks_every_selection(tiny_llava, samples, cls, message):
    """Both stages, on a padded batch of two: the harness refuses a wrong count or out-of-range indices."""
    method = register_method(f"test-{cls.__name__.lower()}")(cls)()
    try:
        with Pruner(tiny_llava, method, 16, budget_mode="final") as pruner, pytest.raises(SelectionError, match=message):
            pruner.generate(tiny_llava.prepare(samples[:2]), max_new_tokens=1)
    finally:
        _REGISTRY.pop(method.name)


def test_selection_errors_say_how_to_fix_them():
    with pytest.raises(SelectionError, match=r"prunebench.top_k\(scores, keep\)"):
        Selection(torch.tensor([[0, 5, 9]])).validate(1, 10, 4, "m")
    with pytest.raises(SelectionError, match="integer tensor.*prunebench.top_k"):
        Selection(torch.tensor([0.0, 5.0])).validate(1, 10, 2, "m")


def _record_layer_inputs(layer):
    """Forward pre-hook (registered after the Pruner's, so it sees what the pruned layer really gets)."""
    seen = []

    def hook(module, args, kwargs):
        seen.append((kwargs.get("position_ids"), kwargs["position_embeddings"][0]))

    return seen, layer.register_forward_pre_hook(hook, with_kwargs=True)


def test_fastv_keeps_original_positions_and_random_renumbers(tiny_llava, samples):
    batch = tiny_llava.prepare(samples[:1])
    length = batch.input_ids.shape[1]
    start = int((batch.input_ids[0] == tiny_llava.image_token_id).nonzero()[0])
    # FastV: layers >= K see the kept tokens at their positions in the unpruned prompt, decoding continues at L
    with Pruner(tiny_llava, create_method("fastv", layer=2), 16, budget_mode="final") as pruner:
        seen, handle = _record_layer_inputs(tiny_llava.decoder_layers()[2])
        try:
            out = pruner.generate(batch, max_new_tokens=2, min_new_tokens=2)
        finally:
            handle.remove()
    kept = out.stats.kept["layer2"][0]
    expected = torch.cat([torch.arange(start), start + kept, torch.arange(start + 576, length)])
    (prefill_ids, prefill_cos), (decode_ids, decode_cos) = seen
    assert torch.equal(prefill_ids[0], expected)  # gaps where image tokens were dropped
    assert int(decode_ids[0, -1]) == length  # the first generated token sits after the unpruned prompt
    rotary = tiny_llava.model.model.language_model.rotary_emb
    full_cos, _ = rotary(prefill_cos, torch.arange(length + 1)[None])
    torch.testing.assert_close(prefill_cos[0], full_cos[0, expected])  # RoPE at the original positions too
    torch.testing.assert_close(decode_cos[0, -1], full_cos[0, length])
    # random (compact): the shortened sequence is renumbered 0..L'-1; with position_policy="original" it is not
    with Pruner(tiny_llava, create_method("random"), 16) as pruner:
        compact = pruner.generate(batch, max_new_tokens=1).llm_inputs.position_ids
    assert torch.equal(compact[0], torch.arange(compact.shape[1]))
    with Pruner(tiny_llava, create_method("random", position_policy="original"), 16) as pruner:
        out = pruner.generate(batch, max_new_tokens=1)
    original = out.llm_inputs.position_ids[0]
    kept = out.stats.kept["vision"][0]
    assert torch.equal(original[start : start + 16], start + kept)  # gaps where tokens were dropped
    assert int(original[-1]) == length - 1  # decoding continues at the unpruned length


# -- nothing in transformers is patched, eager attention never runs ------------------------------------------------
def _transformers_functions():
    import transformers.models.clip.modeling_clip as clip
    import transformers.models.llama.modeling_llama as llama
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    return {
        "LlamaAttention.forward": llama.LlamaAttention.forward,
        "LlamaDecoderLayer.forward": llama.LlamaDecoderLayer.forward,
        "CLIPAttention.forward": clip.CLIPAttention.forward,
        "CLIPEncoderLayer.forward": clip.CLIPEncoderLayer.forward,
        "llama eager_attention_forward": llama.eager_attention_forward,
        "clip eager_attention_forward": clip.eager_attention_forward,
        "ALL_ATTENTION_FUNCTIONS['sdpa']": ALL_ATTENTION_FUNCTIONS["sdpa"],
        "F.scaled_dot_product_attention": torch.nn.functional.scaled_dot_product_attention,
    }


@pytest.mark.parametrize("name, budget", [("fastv", 16), ("visionzip", 16)])
def test_a_pruned_run_patches_nothing_in_transformers(tiny_llava, samples, name, budget):
    before = _transformers_functions()
    with Pruner(tiny_llava, create_method(name), budget, budget_mode="final") as pruner:
        pruner.generate(tiny_llava.prepare(samples[:2]), max_new_tokens=2)
        during = _transformers_functions()
    after = _transformers_functions()
    for key, function in before.items():
        assert during[key] is function and after[key] is function, f"{key} was replaced"
    patched = [n for n, m in tiny_llava.model.named_modules() if "forward" in vars(m)]
    assert not patched, f"instance-level forward overrides on {patched[:3]}"


@pytest.mark.parametrize("name", ["fastv", "visionzip"])
def test_eager_attention_never_runs_during_a_pruned_run(tiny_llava, samples, monkeypatch, name):
    """Count calls of the eager kernels of the LLM and the ViT and of the SDPA kernel (test-only wrappers)."""
    import transformers.models.clip.modeling_clip as clip
    import transformers.models.llama.modeling_llama as llama
    from transformers.modeling_utils import AttentionInterface

    calls = {"eager": 0, "sdpa": 0}

    def counting(kind, function):
        def wrapper(*args, **kwargs):
            calls[kind] += 1
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(llama, "eager_attention_forward", counting("eager", llama.eager_attention_forward))
    monkeypatch.setattr(clip, "eager_attention_forward", counting("eager", clip.eager_attention_forward))
    monkeypatch.setitem(AttentionInterface._global_mapping, "sdpa", counting("sdpa", AttentionInterface._global_mapping["sdpa"]))
    batch = tiny_llava.prepare(samples[:2])
    with Pruner(tiny_llava, create_method(name), 16, budget_mode="final") as pruner:
        out = pruner.generate(batch, max_new_tokens=2)
    assert out.stats.kept and calls["sdpa"] > 0 and calls["eager"] == 0, calls
    # the counter does see eager attention when the model runs it (the test can fail)
    previous = tiny_llava.model.config._attn_implementation
    tiny_llava.model.set_attn_implementation("eager")
    try:
        with torch.inference_mode():
            tiny_llava.model(**batch.inputs)
    finally:
        tiny_llava.model.set_attn_implementation(previous)
    assert calls["eager"] > 0


# -- attention signals from captured q/k -----------------------------------------------------------------------------
def _padded_attention(mask, causal=True, queries=5, keys=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, 2, queries, 4, generator=gen), torch.randn(2, 2, keys, 4, generator=gen)
    return Captured(q, k, mask, 0.5, causal)


def _reference(cap, allowed):
    logits = (cap.query @ cap.key.transpose(-1, -2)) * cap.scaling
    return torch.softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1)


def test_captured_attention_follows_a_2d_flash_attention_padding_mask():
    """FlashAttention hands the kernel a (B, L) key-padding mask (True = real token) and relies on is_causal."""
    pad = torch.tensor([[False, False, True, True, True], [True] * 5])  # sample 0 is left-padded by 2
    rows = torch.arange(5).expand(2, -1)
    got = _padded_attention(pad).probabilities(rows)
    allowed = torch.ones(5, 5, dtype=torch.bool).tril()[None, None] & pad[:, None, None, :]
    want = _reference(_padded_attention(pad), allowed)
    torch.testing.assert_close(got[0, :, 2:], want[0, :, 2:])  # real rows of the padded sample
    torch.testing.assert_close(got[1], want[1])
    assert float(got[0, :, 2:, :2].max()) == 0.0  # padding keys get nothing
    # the same as the 4-D boolean mask sdpa receives
    torch.testing.assert_close(got, _padded_attention(allowed).probabilities(rows))
    # integer 0/1 masks, and no mask (no padding: causal only)
    torch.testing.assert_close(_padded_attention(pad.long()).probabilities(rows), got)
    torch.testing.assert_close(_padded_attention(None).probabilities(rows), _reference(_padded_attention(None), torch.ones(5, 5, dtype=torch.bool).tril()))


def test_captured_attention_2d_mask_with_cached_keys_and_a_sliding_window():
    """Two new queries over five keys (three cached): causal offset 3; a longer 2-D mask covers the last 5 keys."""
    pad = torch.tensor([[False, True, True, True, True, True], [True] * 6])
    cap = _padded_attention(pad, queries=2, keys=5)
    allowed = (torch.arange(5)[None, :] <= torch.arange(2)[:, None] + 3)[None, None] & pad[:, None, None, 1:]
    torch.testing.assert_close(cap.probabilities(torch.arange(2).expand(2, -1)), _reference(cap, allowed))
    with pytest.raises(ValueError, match="expected"):
        _padded_attention(torch.ones(2, 5, 5, dtype=torch.bool)).probabilities(torch.arange(2).expand(2, -1))


# -- registry -----------------------------------------------------------------------------------------------------
def test_builtins_are_registered_and_listed_by_pattern():
    assert {"random", "fastv", "visionzip"} <= set(list_methods())
    matched = list_methods("fast*")
    assert "fastv" in matched and "random" not in matched
    assert matched == sorted(matched) and all(name.startswith("fast") for name in matched)
    info = method_info("visionzip")
    assert info["stages"] == ["vision"] and "CVPR 2025" in info["paper"]


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(UnknownMethodError, match="unknown method 'fastvv'; known methods: .*fastv.*random"):
        create_method("fastvv")


def test_create_method_overrides_and_coerces_cli_strings():
    method = create_method("fastv", layer="3", query="mean")
    assert method.layer == 3 and method.query == "mean"
    with pytest.raises(Exception, match="no parameter"):
        create_method("fastv", k=3)
    with pytest.raises(PruneBenchError, match="should be an int"):
        create_method("fastv", layer="three")


def _coercion_probe():
    from dataclasses import dataclass

    from prunebench.core import VisionStagePruner
    from prunebench.registry import register_method

    @register_method("coercion-probe")
    @dataclass
    class Probe(VisionStagePruner):
        layers: tuple[int, ...] = (2, 6)
        names: tuple[str, ...] = ("a",)
        flags: tuple[bool, ...] = (True,)
        empty: tuple[int, ...] = ()
        schedule: Sequence[int] | str = "auto"
        depth: int | str = "auto"
        label: str = "x"

    return Probe


@pytest.mark.parametrize(
    "field,text,expected",
    [
        ("layers", "2,6,12", (2, 6, 12)),
        ("layers", "[2, 6, 12]", (2, 6, 12)),
        ("layers", "(3,)", (3,)),
        ("layers", "7", (7,)),
        ("layers", "[]", ()),
        ("names", "b, c", ("b", "c")),
        ("flags", "true,off", (True, False)),
        ("empty", "1,2", (1, 2)),  # an empty default: the element type is read from the annotation
        ("schedule", "2,6,15", (2, 6, 15)),
        ("schedule", "[4]", (4,)),
        ("schedule", "auto", "auto"),
        ("depth", "12", 12),
        ("depth", "auto", "auto"),
        ("label", "2,6", "2,6"),  # a plain str field keeps the string
    ],
)
def test_create_method_coerces_lists_tuples_and_strings(field, text, expected):
    from prunebench.registry import _REGISTRY

    _coercion_probe()
    try:
        value = getattr(create_method("coercion-probe", **{field: text}), field)
        assert value == expected and type(value) is type(expected)
    finally:
        _REGISTRY.pop("coercion-probe", None)


@pytest.mark.parametrize("field,text", [("layers", "2,x"), ("layers", "[2,,6]"), ("flags", "maybe"), ("schedule", "2,six")])
def test_create_method_refuses_a_bad_list_in_one_line(field, text):
    from prunebench.registry import _REGISTRY

    _coercion_probe()
    try:
        with pytest.raises(PruneBenchError, match=f"parameter {field}=.* should be a comma-separated list of") as info:
            create_method("coercion-probe", **{field: text})
        assert "\n" not in str(info.value)
    finally:
        _REGISTRY.pop("coercion-probe", None)


def test_sparsevlm_layers_from_the_command_line():
    assert create_method("sparsevlm", layers="0,1,2").layers == (0, 1, 2)
    assert create_method("sparsevlm", layers="[2, 6, 15]").layers == (2, 6, 15)
    with pytest.raises(PruneBenchError, match="increasing"):
        create_method("sparsevlm", layers="6,2")


def test_per_model_defaults_apply_under_cli_overrides():
    from prunebench.models.defaults import resolve_method

    assert resolve_method("fastv", "tiny-llava", "llava").layer == 2
    assert resolve_method("fastv", "tiny-llava", "llava", layer=1).layer == 1


# -- one tie rule, the general budget solver, finite merged tokens (issue 12) ----------------------------------------
def test_top_k_breaks_exact_ties_by_the_lower_index():
    from prunebench.core import ranked, top_k

    scores = torch.tensor([[1.0, 3.0, 3.0, 0.0, 3.0, 3.0, 2.0, 3.0]])
    assert top_k(scores, 3)[0].tolist() == [1, 2, 4]  # five tokens tie at 3.0: the three lowest indices
    assert ranked(scores)[0].tolist() == [1, 2, 4, 5, 7, 6, 0, 3]
    flat = torch.zeros(2, 1000)  # torch.topk's order of equal values is the kernel's; ours is not
    assert top_k(flat, 10).tolist() == [list(range(10))] * 2


@pytest.mark.parametrize("num_layers,cut,before", [(32, 2, 576), (4, 2, 576), (6, 3, 200), (28, 1, 81)])
def test_solve_cuts_with_one_cut_is_solve_single_cut(num_layers, cut, before):
    from prunebench.core import solve_cuts

    for mode in ("average", "final"):
        ctx = PlanContext(576, num_layers, mode)
        for budget in range(1, before + 1, 7):
            try:
                expected = solve_single_cut(budget, ctx, cut, before=before)
            except InfeasibleBudget:
                with pytest.raises(InfeasibleBudget, match="cannot go below"):
                    solve_cuts(budget, ctx, [cut], before=before)
                continue
            assert solve_cuts(budget, ctx, [cut], before=before) == [expected]


def test_solve_cuts_meets_the_average_budget_with_the_schedules_shape():
    from prunebench.core import solve_cuts

    ctx = PlanContext(576, 32, "average")
    for budget in (64, 100, 128, 192):
        counts = solve_cuts(budget, ctx, [3, 7, 16], shape=[0.5, 0.25, 0.1])
        plan = ctx.plan(llm=dict(zip([3, 7, 16], counts)))
        check_plan_meets_budget(plan, budget, "average", "m")
        assert counts == sorted(counts, reverse=True)
    # a stage whose share exceeds the tokens it receives keeps them all; the rest is rescaled
    assert solve_cuts(150, PlanContext(576, 32, "average"), [3, 7, 16], shape=[5.0, 0.25, 0.1])[0] == 576
    # final mode: the last stage keeps the budget, earlier stages their ratio to it
    assert solve_cuts(20, PlanContext(576, 32, "final"), [3, 7, 16], shape=[0.5, 0.25, 0.1]) == [100, 50, 20]
    with pytest.raises(InfeasibleBudget, match="cannot go below 55"):
        solve_cuts(54, ctx, [3, 7, 16], shape=[0.5, 0.25, 0.1])


@pytest.mark.parametrize("where", ["prepend", "append"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_selection_refuses_merged_tokens_that_are_not_finite(where, bad):
    merged = torch.zeros(1, 2, 8)
    merged[0, 1, 3] = bad
    with pytest.raises(SelectionError, match=f"{where}ed merged tokens hold NaN or infinite"):
        Selection(torch.tensor([[1, 2]]), **{where: merged}).validate(1, 10, 4, "m")


@dataclasses.dataclass
class _NaNMerge(VisionStagePruner):
    def select_vision(self, view, keep):
        merged = view.features[:, :1].clone()
        merged[..., 0] = float("nan")
        return Selection(torch.arange(keep - 1).expand(view.batch_size, -1), append=merged)


def test_engine_fails_a_selection_with_nan_merged_tokens(tiny_llava, samples):
    with Pruner(tiny_llava, _NaNMerge(), 16, budget_mode="final") as pruner, pytest.raises(SelectionError, match="NaN"):
        pruner.generate(tiny_llava.prepare(samples[:1]), max_new_tokens=1)


# -- scored bases ------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Ramp(ScoredVisionPruner):
    """Score = a fixed ramp with plateaus: ties everywhere, so the tie rule decides."""

    capture = ("feature", -1, 0)

    def score(self, view):
        return (torch.arange(view.num_tokens, device=view.features.device) // 4).float().flip(0).expand(view.batch_size, -1)


class _RampOverAllUnits(_Ramp):
    per_unit = False


def _unit_view(units: int, per_unit: int, batch: int = 1):
    from prunebench.views import VisionView

    n = units * per_unit
    unit_of = torch.arange(units).repeat_interleave(per_unit).expand(batch, -1) if units > 1 else None
    return VisionView(
        features=torch.zeros(batch, n, 4),
        grid=(1, per_unit),
        feature_layer=1,
        num_vision_layers=3,
        num_units=units,
        unit_kind="crop" if units > 1 else "image",
        unit_of=unit_of,
    )


def test_scored_vision_pruner_captures_declared_layers_and_keeps_the_top_with_ties_to_the_lower_index():
    method = _Ramp()
    assert method.vision_layers(3, 1) == (0, 1, 2)  # "feature" = 1, -1 = 2, 0
    # one image of 12 tokens: scores 2,2,2,2,1,1,1,1,0,0,0,0; keep 6 = the four 2s and the two lowest 1s
    assert method.select_vision(_unit_view(1, 12), 6).keep[0].tolist() == [0, 1, 2, 3, 4, 5]


def test_scored_vision_pruner_gives_each_unit_its_quota():
    method = _Ramp()
    # 3 crops of 8 tokens, scores 5 5 5 5 4 4 4 4 | 3 3 3 3 2 2 2 2 | 1 1 1 1 0 0 0 0; keep 7 -> quotas 3, 2, 2
    kept = method.select_vision(_unit_view(3, 8, batch=2), 7).keep
    assert kept.tolist() == [[0, 1, 2, 8, 9, 16, 17]] * 2
    assert _RampOverAllUnits().select_vision(_unit_view(3, 8), 7).keep[0].tolist() == list(range(7))  # per_unit = False


def test_scored_llm_pruner_plans_one_cut_and_keeps_the_top_scores():
    @dataclasses.dataclass
    class Flat(ScoredLLMPruner):
        layer: int = 2

        def score(self, view):
            return torch.zeros(view.batch_size, view.num_visual)

    method = Flat()
    plan = method.plan(16, PlanContext(64, 4, "final"))
    assert plan.llm == {2: 16} and method.llm_signal_layers(plan) == (1,)
    from prunebench.views import LayerView

    view = LayerView(layer=2, hidden_states=torch.zeros(1, 80, 4), visual_index=torch.arange(5, 69)[None], valid=torch.ones(1, 80, dtype=torch.bool))
    assert method.select_llm(view, 16).keep[0].tolist() == list(range(16))


def test_core_sits_below_the_views_and_the_bases():
    """views imports core; core imports neither views nor bases (not even for type checking)."""
    import ast
    from pathlib import Path

    import prunebench.core

    tree = ast.parse(Path(prunebench.core.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not {name for name in imported if name and name.startswith("prunebench")}
