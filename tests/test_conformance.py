"""The conformance kit over every registered method (built-ins and installed plugins) on every tiny model.

A failure message names the property, the method and the model (DESIGN.md, "Conformance kit").
"""

import functools

import pytest

from prunebench.conformance import CHECKS, run_check, synthetic_samples
from prunebench.models import TINY_MODELS, load_model
from prunebench.registry import list_methods
from prunebench.models.defaults import resolve_method


@functools.lru_cache(maxsize=None)
def _adapter(name):
    return load_model(name)


@functools.lru_cache(maxsize=None)
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
    from prunebench.conformance import LOGIT_TOL, logit_tolerance
    import torch

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
    result = run_check(check, adapter, resolve_method("random", "toy-llava", adapter.family), budget=64,
                       samples=synthetic_samples(family=adapter.family))
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
