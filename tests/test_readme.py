"""The README's method example is real code: it registers, runs and passes the conformance kit."""

import re
from pathlib import Path

import pytest

from prunebench.bases import ScoredVisionPruner
from prunebench.conformance import run_check, synthetic_samples
from prunebench.models import load_model
from prunebench.registry import _REGISTRY

README = Path(__file__).resolve().parents[1] / "README.md"


FAMILIES = ("tiny-llava", "tiny-llava_next", "tiny-video_llava", "tiny-qwen2_5_vl")
# The whole kit on the four families takes about a minute on one CPU thread; this keeps the checks the example
# can break (token counts per layout and mode, batch = one by one, same seed = same kept set: about 12 s) on
# every family, and the score-against-eager check on one family with [CLS] and on Qwen2.5-VL, which has none
# (about 4 s). `prunebench check cls-topk` runs all seven checks.
CHECKS = ("token_contract", "batch", "determinism")
SIGNALS_ON = ("tiny-llava", "tiny-qwen2_5_vl")


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


@pytest.mark.parametrize("model", FAMILIES)
def test_readme_method_example_passes_the_kit(model):
    adapter = load_model(model)
    samples = synthetic_samples(family=adapter.family)
    method = readme_method()
    for check in CHECKS + (("signals",) if model in SIGNALS_ON else ()):
        result = run_check(check, adapter, method, budget=32, samples=samples)
        assert result.passed, f"{model} {check}: {result.detail}"
    if model in SIGNALS_ON:  # the score the example read, checked against eager attention
        assert ("cls_attention" if adapter.family != "qwen2_5_vl" else "received_attention") in result.detail


def test_readme_names_the_two_commands_and_ci_runs_the_second():
    text = README.read_text()
    assert "python3 -m nox -s demo" in text and "python3 -m nox -s tests" in text
    assert "nox -s tests" in (README.parent / ".ci" / "run").read_text()
