"""`prunebench models`: the model table, its visual-token arithmetic, the weights lookup; the defaults' feasibility."""

from __future__ import annotations

import json

import huggingface_hub
import pytest
from PIL import Image

from prunebench.adapters.base import Sample
from prunebench.cli import main
from prunebench.core import PlanContext, check_plan_meets_budget
from prunebench.models import DEFAULT_MODEL, TINY_MODELS, is_random_weights
from prunebench.models.catalog import CATALOG, RANDOM_WEIGHTS_NOTE, catalog_entry, toy_geometry, visual_tokens
from prunebench.models.defaults import resolve_method
from prunebench.runner.config import DEFAULTS


def test_models_lists_every_runnable_model(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in [
        DEFAULT_MODEL,
        *TINY_MODELS,
        "llava-hf/llava-1.5-7b-hf",
        "llava-hf/llava-1.5-13b-hf",
        "llava-hf/llava-v1.6-vicuna-7b-hf",
        "llava-hf/llava-v1.6-mistral-7b-hf",
        "LanguageBind/Video-LLaVA-7B-hf",
        "Qwen/Qwen2.5-VL-7B-Instruct",
    ]:
        assert name in out, name
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    for tiny in TINY_MODELS:
        assert RANDOM_WEIGHTS_NOTE in lines[tiny]
    assert RANDOM_WEIGHTS_NOTE not in lines[DEFAULT_MODEL] and RANDOM_WEIGHTS_NOTE not in lines["llava-hf/llava-1.5-7b-hf"]
    assert "(default)" in lines[DEFAULT_MODEL] and "present" in lines[DEFAULT_MODEL]  # the shipped weights
    assert " 576 " in lines["llava-hf/llava-1.5-7b-hf"] and " 32 " in lines["llava-hf/llava-1.5-7b-hf"]


def test_models_json_and_the_tiny_names_come_from_one_table(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == [e.name for e in CATALOG]
    assert {r["name"]: r["family"] for r in rows if r["kind"] == "tiny"} == TINY_MODELS
    assert {r["name"] for r in rows if r["random_weights"]} == set(TINY_MODELS)


def test_is_random_weights():
    assert all(is_random_weights(name) for name in TINY_MODELS)
    assert not is_random_weights(DEFAULT_MODEL)
    assert not is_random_weights("llava-hf/llava-1.5-7b-hf")
    assert not is_random_weights("/some/local/folder")  # unknown: assume real weights


def test_weights_present_reads_the_local_hf_cache(tmp_path, monkeypatch, capsys):
    repo = "llava-hf/llava-1.5-7b-hf"
    snapshot = tmp_path / "models--llava-hf--llava-1.5-7b-hf" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (tmp_path / "models--llava-hf--llava-1.5-7b-hf" / "refs").mkdir()
    (tmp_path / "models--llava-hf--llava-1.5-7b-hf" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[repo]["weights"] == "not downloaded"  # a snapshot folder without weights
    (snapshot / "model.safetensors.index.json").write_text("{}")
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[repo]["weights"] == "present"
    assert rows["llava-hf/llava-1.5-13b-hf"]["weights"] == "not downloaded"
    assert rows["tiny-llava"]["weights"] == "built from config"


def test_visual_token_arithmetic_matches_the_models():
    from prunebench.models import load_model

    geo = toy_geometry()
    assert (geo["image_size"] // geo["patch_size"]) ** 2 == 576 and geo["llm_layers"] == 6
    assert visual_tokens(catalog_entry("llava-hf/llava-1.5-7b-hf")) == (576, 576)
    assert visual_tokens(catalog_entry("LanguageBind/Video-LLaVA-7B-hf")) == (256, 256)
    assert visual_tokens(catalog_entry("Qwen/Qwen2.5-VL-7B-Instruct")) == (4, 16384)
    # the tiny LLaVA-NeXT, built: a 672 x 672 image fills the largest AnyRes grid (576 base + 48 rows x 49)
    adapter = load_model("tiny-llava_next")
    batch = adapter.prepare([Sample("s", "what is this ?", image=Image.new("RGB", (672, 672), "white"))])
    image_token = adapter.processor.tokenizer.convert_tokens_to_ids("<image>")
    assert int((batch.input_ids == image_token).sum()) == visual_tokens(catalog_entry("tiny-llava_next"))[1] == 2928


def test_every_default_cell_is_feasible_on_the_default_model():
    """A bare `prunebench run`: every method x budget of the defaults meets the budget contract on the toy model."""
    geo = toy_geometry()
    num_visual, depth = (geo["image_size"] // geo["patch_size"]) ** 2, geo["llm_layers"]
    assert DEFAULTS["model"] in (None, DEFAULT_MODEL)
    cells = 0
    for name in DEFAULTS["methods"]:
        method = resolve_method(name, DEFAULT_MODEL, "llava", **(DEFAULTS["method_args"].get(name) or {}))
        for budget in DEFAULTS["budgets"]:
            plan = method.plan(budget, PlanContext(num_visual, depth, DEFAULTS["budget_mode"]))
            check_plan_meets_budget(plan, budget, DEFAULTS["budget_mode"], name)  # raises InfeasibleBudget
            cells += 1
    assert cells == len(DEFAULTS["methods"]) * len(DEFAULTS["budgets"]) > 0


@pytest.mark.parametrize("name", ["fastv"])
def test_the_feasibility_check_can_fail(name):
    """The check above would catch FastV, the old default: its cut at layer 2 of 6 keeps the average above 192."""
    from prunebench.core import InfeasibleBudget

    method = resolve_method(name, DEFAULT_MODEL, "llava")
    with pytest.raises(InfeasibleBudget):
        check_plan_meets_budget(method.plan(64, PlanContext(576, 6, "average")), 64, "average", name)
