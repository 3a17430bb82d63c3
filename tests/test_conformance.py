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
