"""The conformance kit over every registered method (built-ins and installed plugins) on every tiny model.

A failure message names the property, the method and the model; a method that refuses a family
(``UnsupportedModel``) passes as refused.
"""

import functools

import pytest

from prunebench.conformance import CHECKS, run_check, synthetic_samples
from prunebench.core import Selection, UnsupportedModel, VisionStagePruner, top_k
from prunebench.models import TINY_MODELS, load_model
from prunebench.models.defaults import resolve_method
from prunebench.registry import list_methods


@functools.cache
def _adapter(name):
    return load_model(name)


@functools.cache
def _samples(name):
    return synthetic_samples(family=_adapter(name).family)


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("method", list_methods())
@pytest.mark.parametrize("model", sorted(TINY_MODELS))
def test_conformance(model, method, check):
    adapter = _adapter(model)
    instance = resolve_method(method, model, adapter.family)
    result = run_check(check, adapter, instance, budget=64, samples=_samples(model))
    assert result.passed, f"{method} on {model}: property '{check}' failed: {result.detail}"


def test_logit_tolerance_scales_with_the_logits_magnitude():
    import torch

    from prunebench.conformance import LOGIT_TOL, logit_tolerance

    small = [torch.tensor([[0.3, -0.5]]), torch.tensor([[0.1, 0.2]])]
    assert logit_tolerance(small) == (LOGIT_TOL, 0.5)  # never below the absolute bound of the tiny models
    large = [torch.tensor([[3.0, -14.0]])]
    tolerance, scale = logit_tolerance(large)
    assert scale == 14.0 and tolerance == pytest.approx(14 * LOGIT_TOL)


@pytest.mark.parametrize("check", ["cache", "batch"])
def test_cache_and_batch_hold_on_the_trained_toy_model(check):
    """The shipped toy-llava's logits reach |16|: fp32 reordering errors of a few 1e-6 are under 4e-7 relative and
    must not fail the kit on the project's own model (they did under an absolute 1e-6)."""
    adapter = _adapter("toy-llava")
    result = run_check(check, adapter, resolve_method("random", "toy-llava", adapter.family), budget=64, samples=synthetic_samples(family=adapter.family))
    assert result.passed, result.detail
    assert "at max |logit|" in result.detail


def test_batch_check_fails_on_non_finite_logits(monkeypatch):
    """A NaN in the batched logits is a failure, not a difference that max() and comparisons skip."""
    import prunebench.conformance as kit

    generate = kit._generate

    def poisoned(adapter, method, budget, samples, **kwargs):
        out = generate(adapter, method, budget, samples, **kwargs)
        if len(samples) > 1:
            first = out.logits[0].clone()
            first[1, 0] = float("nan")
            out.logits = (first, *out.logits[1:])
        return out

    monkeypatch.setattr(kit, "_generate", poisoned)
    adapter = _adapter("tiny-llava")
    result = run_check("batch", adapter, resolve_method("random", "tiny-llava", adapter.family), budget=64, samples=_samples("tiny-llava"))
    assert not result.passed and "non-finite" in result.detail, result.detail


def test_max_diff_counts_one_sided_nan_as_infinite():
    import math

    import torch

    from prunebench.conformance import _max_diff

    nan, inf = float("nan"), float("inf")
    assert _max_diff([torch.tensor([1.0, nan])], [torch.tensor([1.5, nan])]) == 0.5  # NaN padding on both sides
    assert _max_diff([torch.tensor([1.0, nan])], [torch.tensor([1.0, 2.0])]) == math.inf
    assert _max_diff([torch.tensor([inf])], [torch.tensor([inf])]) == 0.0
    assert _max_diff([torch.tensor([inf])], [torch.tensor([1.0])]) == math.inf


# -- refusals and one-line details --------------------------------------------------------------------------------
REFUSAL = "cls-only ranks tokens by [CLS] attention; this vision tower has no [CLS]"


class _ClsOnly(VisionStagePruner):
    """[CLS]-attention top-k: undefined on a tower without [CLS] (Qwen2.5-VL), where it refuses in ``select``."""

    name = "cls-only"

    def vision_layers(self, num_vision_layers, feature_layer):
        return (feature_layer,)

    def select_vision(self, view, keep):
        if not view.has_cls:
            raise UnsupportedModel(REFUSAL)
        return Selection(top_k(view.cls_attention(), keep))


class _RefusesInPlan(VisionStagePruner):
    name = "refuses-in-plan"

    def plan(self, budget, ctx):
        raise UnsupportedModel("refuses-in-plan is undefined here")


def test_a_refusal_in_select_passes_as_refused_on_that_family_only():
    qwen = _adapter("tiny-qwen2_5_vl")
    results = {check: run_check(check, qwen, _ClsOnly(), budget=64, samples=_samples("tiny-qwen2_5_vl")) for check in CHECKS}
    assert all(r.passed for r in results.values()), [str(r) for r in results.values() if not r.passed]
    refused = {check for check, r in results.items() if r.refused}
    # every property that runs the method's selection records the refusal (noop keeps every token: no select)
    assert {"token_contract", "cache", "batch", "hygiene", "determinism"} <= refused, refused
    assert all(results[check].detail == REFUSAL for check in refused)
    assert str(results["cache"]).startswith("PASS") and f"refused: {REFUSAL}" in str(results["cache"])
    llava = _adapter("tiny-llava")
    for check in ("token_contract", "cache"):
        result = run_check(check, llava, _ClsOnly(), budget=64, samples=_samples("tiny-llava"))
        assert result.passed and not result.refused, result.detail


def test_a_refusal_in_plan_passes_every_property_as_refused():
    adapter = _adapter("tiny-llava")
    for check in CHECKS:
        result = run_check(check, adapter, _RefusesInPlan(), budget=64, samples=_samples("tiny-llava"))
        assert result.passed and result.refused and result.detail == "refuses-in-plan is undefined here", (check, str(result))


def test_a_crash_fails_with_a_one_line_detail_and_the_traceback_apart():
    class _Crashes(_ClsOnly):
        name = "crashes"

        def select_vision(self, view, keep):
            raise RuntimeError("first line\nsecond line")

    result = run_check("cache", _adapter("tiny-llava"), _Crashes(), budget=64, samples=_samples("tiny-llava"))
    assert not result.passed and not result.refused
    assert result.detail == "raised RuntimeError: first line; second line"
    assert "Traceback" in result.traceback and "RuntimeError: first line" in result.traceback
    assert len(str(result).splitlines()) == 1


class _RefusesVideos(_ClsOnly):
    """Random top-k on images; undefined on videos (as the downsampling control)."""

    name = "refuses-videos"

    def select_vision(self, view, keep):
        if view.unit_kind == "frame":
            raise UnsupportedModel("refuses-videos: images only")
        return Selection(top_k(view.rand(view.num_tokens), keep))


def test_a_refusal_of_one_modality_still_checks_the_other():
    """A method that refuses videos is still held to every property on the images of the same family; the video
    refusal is recorded beside the image result (before, the whole property passed as refused, untested)."""
    adapter = _adapter("tiny-qwen2_5_vl")
    samples = _samples("tiny-qwen2_5_vl")
    assert {s.modality for s in samples} == {"image", "video"}
    for check in ("token_contract", "cache", "batch"):
        result = run_check(check, adapter, _RefusesVideos(), budget=64, samples=samples)
        assert result.passed and not result.refused, str(result)
        assert "image: " in result.detail and "video: refused: refuses-videos: images only" in result.detail


class _LeaksAHook(_ClsOnly):
    """Selects like _ClsOnly but leaves a forward hook on the model: the hygiene property must catch it."""

    name = "leaks-a-hook"

    def select_vision(self, view, keep):
        view.adapter.model.register_forward_hook(lambda *args: None)
        return super().select_vision(view, keep)


def test_hygiene_catches_a_hook_left_behind_on_a_model_never_run_before():
    """Counted after a warm-up forward (transformers adds its own recording hooks on a model's first call), a hook
    the method leaves is still named; a model fresh from its builder, first call inside the check, is the case."""
    from prunebench.adapters.llava import LlavaAdapter
    from prunebench.models.tiny import tiny_llava

    model, processor = tiny_llava()
    fresh = LlavaAdapter(model, processor, name="tiny-llava")
    assert run_check("hygiene", fresh, _ClsOnly(), budget=64, samples=_samples("tiny-llava")).passed
    result = run_check("hygiene", fresh, _LeaksAHook(), budget=64, samples=_samples("tiny-llava"))
    assert not result.passed and "hooks left" in result.detail, result.detail
