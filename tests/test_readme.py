"""The README's method example is real code: it registers, runs and passes the conformance kit."""

import re
from pathlib import Path

import pytest
import torch

from prunebench.bases import ScoredVisionPruner
from prunebench.conformance import CHECKS, run_check, synthetic_samples
from prunebench.models import TINY_MODELS, load_model
from prunebench.registry import _REGISTRY

README = Path(__file__).resolve().parents[1] / "README.md"


# every property on every tiny family, one test per (family, property) so the workers share them (about a minute
# of CPU in all): the README promises the example passes the kit wherever prunebench runs
FAMILIES = tuple(sorted(TINY_MODELS))


def readme_method():
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    namespace: dict = {}
    try:
        exec(compile(block, "README.md", "exec"), namespace)
    finally:
        _REGISTRY.pop("cls-topk", None)
    return namespace["ClsTopK"]()


def test_readme_method_is_score_only():
    method = readme_method()
    assert isinstance(method, ScoredVisionPruner)
    assert "select_vision" not in type(method).__dict__ and "score" in type(method).__dict__


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("model", FAMILIES)
def test_readme_method_example_passes_the_kit(model, check):
    adapter = load_model(model)
    samples = synthetic_samples(family=adapter.family)
    result = run_check(check, adapter, readme_method(), budget=32, samples=samples)
    assert result.passed and not result.refused, f"{model} {check}: {result.detail}"
    if check == "signals":  # the score the example read, checked against eager attention
        with torch.inference_mode():
            has_cls = adapter.encode(adapter.prepare(samples[:1])).has_cls
        assert ("cls_attention" if has_cls else "received_attention") in result.detail


def test_readme_names_the_two_commands_and_ci_runs_the_second():
    text = README.read_text()
    assert "python3 -m nox -s demo" in text and "python3 -m nox -s tests" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert re.search(r"nox -s (\w+ )*tests\b", ci)  # CI runs the README's test session (after the lint session)
