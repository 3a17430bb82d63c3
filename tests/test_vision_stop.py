"""The vision tower stops at the feature layer (``vision_stop="feature"``, the default) with the same features,
logits and answers as the stock run of every layer (``vision_stop="full"``), which stays selectable, is recorded
and changes the cell key; the FLOPs follow."""

from __future__ import annotations

import pytest
import torch

from prunebench.attention import attention_probe
from prunebench.conformance import synthetic_samples
from prunebench.core import PruneBenchError
from prunebench.costs import VisionShape, vision_flops
from prunebench.engine import Pruner, measure_prefill_flops
from prunebench.models import load_model
from prunebench.registry import create_method
from prunebench.resolve import adapter_options, cell_spec
from prunebench.store import cell_key

FAMILIES = ["tiny-llava", "tiny-llava_next", "tiny-video_llava", "tiny-llava_onevision", "tiny-qwen2_5_vl", "toy-llava"]


def _pair(name: str):
    return load_model(name), load_model(name, vision_stop="full")


def _encoder(adapter, modality: str = "image"):
    inner = adapter.model.model
    tower = getattr(inner, "vision_tower", None) or (inner.video_tower if modality == "video" else inner.image_tower)
    return getattr(tower, "vision_model", tower).encoder


def _count_layer_calls(encoder):
    calls = [0]
    handles = [layer.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1)) for layer in encoder.layers]
    return calls, handles


@pytest.mark.parametrize("name", FAMILIES)
def test_features_and_answers_are_identical_both_ways(name):
    feature, full = _pair(name)
    family = feature.family
    samples = synthetic_samples(2, family=family)[:1]
    for method, budget in (("none", None), ("random", 16)):
        m = None if method == "none" else create_method(method)
        outs = []
        for ad in (feature, full):
            batch = ad.prepare(samples)
            with torch.inference_mode():
                view = ad.encode(batch)
            with Pruner(ad, m if m is not None else create_method("random"), budget) as pruner:
                out = pruner.generate(ad.prepare(samples), max_new_tokens=3, output_logits=True)
            outs.append((view.features, out.tokens, out.logits))
        (f1, t1, l1), (f2, t2, l2) = outs
        assert torch.equal(f1, f2), name
        assert torch.equal(t1, t2), name
        assert all(torch.equal(a, b) for a, b in zip(l1, l2)), name


@pytest.mark.parametrize("name", ["tiny-llava", "tiny-llava_next", "tiny-video_llava", "toy-llava"])
def test_feature_stop_skips_the_layers_after_the_feature_layer_and_full_runs_every_layer(name):
    feature, full = _pair(name)
    samples = synthetic_samples(1, family=feature.family)[:1]  # Video-LLaVA: a video (its video tower)
    total = full.num_vision_layers
    for ad, expected in ((feature, feature.feature_layer + 1), (full, total)):
        encoder = _encoder(ad, samples[0].modality)
        calls, handles = _count_layer_calls(encoder)
        try:
            with torch.inference_mode():
                ad.encode(ad.prepare(samples))
        finally:
            for h in handles:
                h.remove()
        assert calls[0] == expected, (name, ad.vision_stop, calls[0])  # one tower call (crops / frames batched)
        assert len(encoder.layers) == total  # nothing left truncated
    assert feature.feature_layer + 1 < total  # LLaVA reads hidden_states[-2]: the last layer is skipped


def test_a_captured_layer_after_the_feature_layer_still_runs():
    ad = load_model("tiny-llava")
    last = ad.num_vision_layers - 1
    assert ad.vision_layers_run() == ad.feature_layer + 1
    assert ad.vision_layers_run([last]) == ad.num_vision_layers  # PruMerge+ reads the last layer's q/k
    view_calls, handles = _count_layer_calls(_encoder(ad))
    try:
        with torch.inference_mode(), attention_probe(ad.model):  # q/k are captured through the probing kernel
            view = ad.encode(ad.prepare(synthetic_samples(1)[:1]), capture_layers=[last])
    finally:
        for h in handles:
            h.remove()
    assert view_calls[0] == ad.num_vision_layers and last in view.captured


def test_siglip_and_qwen_towers_run_every_layer_when_the_feature_layer_is_the_last():
    for name in ("tiny-llava_onevision", "tiny-qwen2_5_vl"):
        ad = load_model(name)
        assert ad.vision_layers_run() == ad.num_vision_layers


@pytest.mark.parametrize("name", ["tiny-llava", "tiny-llava_next"])
def test_a_feature_stop_run_leaves_the_stock_model_unchanged(name):
    # transformers installs its output-recording hooks once, on the layers present at the first call with
    # hidden states requested: a feature-stop encode before any stock call must not leave later layers unrecorded
    first, reference = load_model(name), load_model(name)
    samples = synthetic_samples(1, family=first.family)[:1]
    encoder = _encoder(first)
    layers = list(encoder.layers)
    with torch.inference_mode():
        first.encode(first.prepare(samples))  # before any stock forward on this model
        assert list(encoder.layers) == layers
        hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in first.model.modules())
        assert hooks == sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in reference.model.modules())
        batch = first.prepare(samples)
        assert torch.equal(first.model(**batch.inputs).logits, reference.model(**reference.prepare(samples).inputs).logits)
        tower = first.model.model.vision_tower
        stock = tower(
            batch.inputs["pixel_values"].flatten(0, 1) if batch.inputs["pixel_values"].dim() == 5 else batch.inputs["pixel_values"], output_hidden_states=True
        ).hidden_states
        assert len(stock) == first.num_vision_layers + 1


def test_measured_vision_flops_drop_by_the_skipped_layer_and_match_the_formula():
    feature, full = _pair("toy-llava")
    counts = {}
    for ad in (feature, full):
        batch = ad.prepare(synthetic_samples(1)[:1])
        counts[ad.vision_stop] = measure_prefill_flops(ad, create_method("random"), 16, batch)
    for count in counts.values():
        assert count.measured_vision == count.analytic_vision
    shape = VisionShape.from_llava_config(full.model.config)
    one_layer = vision_flops(shape, 0, 1) - vision_flops(shape, 0, 0)
    skipped = full.num_vision_layers - feature.vision_layers_run()
    assert skipped == 1
    assert counts["full"].measured_vision - counts["feature"].measured_vision == skipped * one_layer
    assert counts["feature"].measured_llm == counts["full"].measured_llm


def test_analytic_vision_flops_count_only_the_layers_run():
    from prunebench.costs import llava_7b_config

    shape = VisionShape.from_llava_config(llava_7b_config())
    full, feature = vision_flops(shape, 576), vision_flops(shape, 576, 23)
    assert full == vision_flops(shape, 576, 24)
    assert 0.03 < 1 - feature / full < 0.05  # 1 of CLIP-L's 24 layers, less the conv and projector
    with pytest.raises(ValueError, match="layers_run"):
        vision_flops(shape, 576, 25)


def test_the_option_is_in_the_key_and_the_record():
    a = cell_spec("random", 16, model="tiny-llava")
    b = cell_spec("random", 16, model="tiny-llava", vision_stop="full")
    assert a.record()["vision_stop"] == "feature" and b.record()["vision_stop"] == "full"
    assert cell_key(a.record()) != cell_key(b.record())
    assert adapter_options() == {} and adapter_options(vision_stop="full") == {"vision_stop": "full"}
    assert load_model("tiny-llava", vision_stop="full").describe()["vision_stop"] == "full"


def test_plan_cells_and_the_run_cli_carry_the_option(tmp_path):
    from prunebench.runner import resolve_config
    from prunebench.runner.cells import plan_cells

    small = {"model": "tiny-llava", "methods": "random", "budgets": "16", "limit": 1, "output": str(tmp_path)}
    keys = {}
    for stop in ("feature", "full"):
        config = resolve_config(None, {**small, "vision_stop": stop})
        cells = plan_cells(config, "tiny-llava", ["shapes_count"])
        assert all(c.fields["vision_stop"] == stop for c in cells)
        keys[stop] = {c.key for c in cells}
    assert not keys["feature"] & keys["full"]
    with pytest.raises(PruneBenchError, match="vision-stop"):
        resolve_config(None, {**small, "vision_stop": "half"})


def test_bad_option_is_refused_and_lmms_model_args_carry_it():
    with pytest.raises(PruneBenchError, match="vision_stop must be one of"):
        load_model("tiny-llava", vision_stop="last")
    from prunebench.lmms import PruneBenchLMM

    lm = PruneBenchLMM(pretrained="tiny-llava", method="random", budget=16, vision_stop="full")
    assert lm.adapter.vision_stop == "full" and lm.identity["vision_stop"] == "full" and "vision_stop=full" in lm.model_args
    assert "vision_stop" not in PruneBenchLMM(pretrained="tiny-llava").model_args
    with pytest.raises(PruneBenchError, match="vision_stop"):
        PruneBenchLMM.from_adapter(load_model("tiny-llava"), vision_stop="full")


def test_a_method_reading_the_last_layer_costs_the_same_both_ways():
    # PruMerge+ reads the last ViT layer's q/k: under "feature" the tower still runs it, and the FLOPs say so
    feature, full = _pair("toy-llava")
    counts = [measure_prefill_flops(ad, create_method("prumerge+"), 32, ad.prepare(synthetic_samples(1)[:1])) for ad in (feature, full)]
    assert counts[0].measured_vision == counts[1].measured_vision
    assert counts[0].analytic_vision == counts[1].analytic_vision


def test_the_run_command_line_takes_the_option():
    from prunebench.cli import build_parser
    from prunebench.runner.cli import overrides_from_args

    args = build_parser().parse_args(["run", "--model", "tiny-llava", "--vision-stop", "full"])
    assert overrides_from_args(args)["vision_stop"] == "full"
    assert overrides_from_args(build_parser().parse_args(["run"]))["vision_stop"] is None  # the config default (feature) applies
