"""LearnPruner's LPM training: key-masking equals token removal, gradients reach only the LPM, checkpoints."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from prunebench.training import (
    LearnedPruningModule,
    TrainConfig,
    _answer_batch,
    load_lpm,
    lpm_loss,
    masked_visual_mask,
    synthetic_stream,
    train_learnpruner,
)


def test_key_masking_with_a_hard_mask_equals_removing_the_tokens(tiny_llava):
    """m ∈ {0, 1} with eps = 0: every layer's attention ignores masked visual keys exactly as if the tokens
    were gone (the kept tokens keep their positions). Compared at the last prompt token."""
    adapter = tiny_llava
    stream = synthetic_stream(0)
    batch, _ = _answer_batch(adapter, [next(stream)])
    with torch.no_grad():
        view = adapter.encode(batch)
        n = view.num_tokens
        llm = adapter.assemble(batch, adapter.project(view.features), torch.arange(n)[None], "compact")
        keep = (torch.arange(n) % 3 == 0).float()[None]
        mask = masked_visual_mask(llm.attention_mask, llm.visual_index, keep, 0.0, torch.float32)
        lm = adapter.model.model.language_model
        masked = lm(inputs_embeds=llm.inputs_embeds, attention_mask=mask, position_ids=llm.position_ids).last_hidden_state
        retain = torch.ones(llm.inputs_embeds.shape[1], dtype=torch.bool)
        retain[llm.visual_index[0][keep[0] == 0]] = False
        removed = lm(inputs_embeds=llm.inputs_embeds[:, retain], position_ids=llm.position_ids[:, retain]).last_hidden_state
        unmasked = lm(inputs_embeds=llm.inputs_embeds, position_ids=llm.position_ids).last_hidden_state
    torch.testing.assert_close(masked[:, -1], removed[:, -1], rtol=1e-4, atol=1e-5)
    assert (masked[:, -1] - unmasked[:, -1]).abs().max() > 1e-3  # the mask really changed something


def test_gradients_reach_only_the_lpm(tiny_llava):
    adapter = tiny_llava
    cfg = TrainConfig()
    batch, answer_len = _answer_batch(adapter, [next(synthetic_stream(1)) for _ in range(2)])
    lpm = LearnedPruningModule(adapter.model.config.vision_config.hidden_size)
    flags = [p.requires_grad for p in adapter.model.parameters()]
    for p in adapter.model.parameters():
        p.requires_grad_(False)
    try:
        loss, stats = lpm_loss(adapter, lpm, batch, answer_len, cfg)
        loss.backward()
    finally:
        for p, f in zip(adapter.model.parameters(), flags):
            p.requires_grad_(f)
    assert lpm.fc1.weight.grad is not None and float(lpm.fc1.weight.grad.abs().sum()) > 0
    assert all(p.grad is None for p in adapter.model.parameters())
    assert 0 <= stats["keep_ratio"] <= 1 and stats["ce"] > 0
    # top-k selection (the default) keeps exactly round(rho * N) tokens and has no ratio term
    loss, stats = lpm_loss(adapter, lpm, batch, answer_len, cfg, keep_ratio=0.25)
    n = n_visual(adapter, batch)
    assert stats["hard_ratio"] == pytest.approx(round(0.25 * n) / n)
    assert stats["loss"] == stats["ce"]
    # the KL objective compares with the unpruned model: zero when every token is kept
    loss, _ = lpm_loss(adapter, lpm, batch, answer_len, replace(cfg, objective="kl"), keep_ratio=1.0)
    assert float(loss) == pytest.approx(0.0, abs=1e-5)
    loss, _ = lpm_loss(adapter, lpm, batch, answer_len, replace(cfg, objective="kl"), keep_ratio=0.1)
    assert float(loss) > 1e-4
    # argmax selection: the ratio term alone pulls the hard keep share toward the target
    lpm.zero_grad()
    cfg_ratio = replace(cfg, selection="argmax", mask_weight=1e6)
    loss, stats = lpm_loss(adapter, lpm, batch, answer_len, cfg_ratio)
    loss.backward()
    bias_grad = lpm.fc2.bias.grad
    # kept share above target -> push the keep logit down (positive gradient), and vice versa
    assert (bias_grad[0] > 0) == (stats["hard_ratio"] > cfg.target_ratio)


def n_visual(adapter, batch) -> int:
    with torch.no_grad():
        return adapter.encode(batch).num_tokens


def test_evaluation_keeps_each_scorers_top_tokens(tiny_llava):
    """Keeping every token, every scorer scores the unpruned model's accuracy; keeping few, a scorer and its
    negation (opposite token sets) see different models."""
    from prunebench.training import evaluate_lpms

    stream = synthetic_stream(3)
    samples = [next(stream) for _ in range(4)]
    lpm = LearnedPruningModule(tiny_llava.model.config.vision_config.hidden_size)
    scorers = {"lpm": lpm.keep_probability, "negated": lambda f: -lpm.keep_probability(f)}
    full = evaluate_lpms(tiny_llava, scorers, samples, keep_ratios=(1.0,), batch_size=2)
    assert full["lpm"] == full["negated"]
    batch, answer_len = _answer_batch(tiny_llava, samples)
    with torch.no_grad():
        from prunebench.training import _answer_loss, _lpm_inputs

        features, llm = _lpm_inputs(tiny_llava, batch, "vision")
        _, logits, targets, _ = _answer_loss(tiny_llava, llm, batch, answer_len, torch.ones(features.shape[:2]), 0.0)
    first = torch.tensor([sum(answer_len[:b]) for b in range(len(samples))])
    assert full["lpm"]["1.0"] == float((logits[first].argmax(-1) == targets[first]).float().mean())


def test_train_command_writes_safetensors_and_recipe(tmp_path):
    from prunebench.cli import main

    out = tmp_path / "lpm.safetensors"
    assert main(["train", "learnpruner", "--model", "tiny-llava", "--steps", "2", "--batch-size", "1", "--output", str(out)]) == 0
    lpm = load_lpm(out)
    assert lpm.width == 32 and lpm.hidden == 16
    recipe = json.loads(out.with_suffix(".json").read_text())
    assert recipe["config"]["steps"] == 2 and recipe["config"]["seed"] == 0 and recipe["model"] == "tiny-llava"
    assert {"data", "loss", "versions", "final", "eval"} <= set(recipe) and recipe["config"]["selection"] == "topk"
    from prunebench.models import load_model
    from prunebench.training import vision_digest

    assert recipe["vision_weights_sha256"] == vision_digest(load_model("tiny-llava").model)
    # seeded: the same recipe gives the same weights
    again = tmp_path / "again.safetensors"
    train_learnpruner("tiny-llava", TrainConfig(steps=2, batch_size=1), again)
    torch.testing.assert_close(load_lpm(again).fc2.weight, lpm.fc2.weight)


def test_unknown_model_has_no_training_data():
    from prunebench.core import PruneBenchError
    from prunebench.training import data_for

    with pytest.raises(PruneBenchError, match="LLaVA-665K"):
        data_for("llava-hf/llava-1.5-7b-hf", 0)


def test_training_refuses_families_without_answer_batches_and_sizes_the_lpm_from_the_view(tmp_path):
    from prunebench.core import PruneBenchError

    with pytest.raises(PruneBenchError, match="LLaVA-1.5 and LLaVA-NeXT only .* tiny-qwen2_5_vl is qwen2_5_vl"):
        train_learnpruner("tiny-qwen2_5_vl", TrainConfig(steps=1, batch_size=1), tmp_path / "q.safetensors")
    out = tmp_path / "next.safetensors"
    train_learnpruner("tiny-llava_next", TrainConfig(steps=1, batch_size=1, input="projected", eval_samples=0), out)
    assert load_lpm(out).width == 64  # the projector's output width (the tiny LLM's hidden size), read from the view


@pytest.mark.parametrize("field", ["steps", "batch_size"])
def test_training_needs_at_least_one_step_and_sample(field):
    from prunebench.core import PruneBenchError

    with pytest.raises(PruneBenchError, match="must be at least 1"):
        TrainConfig(**{field: 0})
