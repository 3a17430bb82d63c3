"""``prunebench profile``: full-size architecture from a shipped config, random weights, cost-only records."""

from __future__ import annotations

import pytest
import torch

from prunebench.cli import build_parser
from prunebench.costs import llava_7b_config
from prunebench.profile import COST_ONLY, ProfileError, build_random_model, profile, shipped_config
from prunebench.store import ResultStore

MODEL = "llava-hf/llava-1.5-7b-hf"


def test_the_shipped_config_is_llava_1_5_7b():
    config, reference = shipped_config(MODEL), llava_7b_config()
    assert config.text_config.to_dict() == reference.text_config.to_dict()
    assert config.vision_config.to_dict() == reference.vision_config.to_dict()
    assert config.vision_feature_layer == -2 and config.vision_feature_select_strategy == "default"
    with pytest.raises(ProfileError, match="no shipped config"):
        shipped_config("llava-hf/llava-1.5-70b-hf")


def test_random_model_has_full_width_cut_layers_and_random_weights():
    adapter = build_random_model(MODEL, layers=1, vision_layers=2)
    shape = adapter.llm_shape
    assert (shape.num_layers, shape.hidden_size, shape.intermediate_size, shape.vocab_size) == (1, 4096, 11008, 32064)
    assert len(adapter.decoder_layers()) == 1 and adapter.num_vision_layers == 2
    q = adapter.decoder_layers()[0].self_attn.q_proj.weight
    assert 0.015 < float(q.detach().float().std()) < 0.025  # N(0, 0.02), not empty memory
    assert torch.equal(adapter.decoder_layers()[0].input_layernorm.weight, torch.ones(4096))
    assert "random weights" in adapter.name
    with pytest.raises(ProfileError, match="--layers"):
        build_random_model(MODEL, layers=33)


def test_profile_writes_cost_only_records_per_method_budget_and_batch_size(tmp_path):
    lines: list[str] = []
    records = profile(
        MODEL, ["random"], [64], tmp_path / "prof", layers=1, vision_layers=2, batch_sizes=(1, 2), reps=1, warmup=0, new_tokens=2, echo=lines.append
    )
    assert [(r["method"], r["budget"], r["batch_size"]) for r in records] == [("none", None, 1), ("none", None, 2), ("random", 64, 1), ("random", 64, 2)]
    assert len({r["key"] for r in records}) == 4
    stored = list(ResultStore(tmp_path / "prof").records())
    assert len(stored) == 4 and all(r["label"] == COST_ONLY and r["cost_only"] and r["relacc"] is None for r in stored)
    assert all(COST_ONLY in line for line in lines) and len(lines) == 4
    base, pruned = records[0], records[2]
    for r in records:
        assert {"ttft", "vision", "llm_prefill", "decode_per_token"} <= set(r["latency_ms"])
        assert r["flops"]["llm_agree"] and r["peak_memory"]["peak_mb"] > 0
        assert r["kv_cache"]["measured_mb"] == pytest.approx(r["kv_cache"]["analytic_mb"])
    assert pruned["tokens"]["per_layer"] == [64] and base["tokens"]["per_layer"] == [576]
    assert pruned["flops"]["llm_measured_tflops"] < base["flops"]["llm_measured_tflops"]
    assert pruned["kv_cache"]["measured_mb"] < base["kv_cache"]["measured_mb"]


def test_the_cli_has_the_profile_command():
    args = build_parser().parse_args(["profile", "--methods", "random,fastv", "--budgets", "64", "--layers", "2", "--batch-sizes", "1,8"])
    assert args.command == "profile" and args.layers == 2 and args.batch_sizes == "1,8"
