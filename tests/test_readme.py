"""The README's method example is real code: it registers, runs and passes the conformance kit."""

import re
from pathlib import Path

from prunebench.conformance import run_check
from prunebench.registry import _REGISTRY

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_method_example_passes_the_kit(tiny_llava, samples):
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    method = namespace["ClsTopK"]()
    try:
        for check in ("token_contract", "signals", "batch"):
            result = run_check(check, tiny_llava, method, budget=32, samples=samples)
            assert result.passed, result.detail
    finally:
        _REGISTRY.pop("cls-topk", None)


def test_readme_names_the_two_commands_and_ci_runs_the_second():
    text = README.read_text()
    assert "python3 -m nox -s demo" in text and "python3 -m nox -s tests" in text
    assert "nox -s tests" in (README.parent / ".ci" / "run").read_text()
