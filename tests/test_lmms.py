"""prunebench as an lmms-eval 0.7 model: entry point, identity / response-cache isolation, batching, errors."""

import pytest

pytest.importorskip("lmms_eval.evaluator")

from lmms_eval.caching.response_cache import ResponseCache
from lmms_eval.evaluator import simple_evaluate

from prunebench.lmms import NO_METHOD, PruneBenchLMM
from prunebench.runner.evaluate import cached_task_manager
from prunebench.spec import CellSpec
from prunebench.suites.shapes import TASK_DIR

TASKS = ["shapes_count"]


@pytest.fixture(scope="module")
def task_manager():
    return cached_task_manager((str(TASK_DIR),))


@pytest.fixture(scope="module")
def lm(tiny_llava):
    return PruneBenchLMM.from_adapter(tiny_llava, pretrained="tiny-llava", batch_size=2)


def _evaluate(lm, task_manager, **kwargs):
    return simple_evaluate(
        model=lm,
        model_args=lm.model_args,
        tasks=TASKS,
        task_manager=task_manager,
        limit=3,
        batch_size=lm.batch_size,
        log_samples=True,
        bootstrap_iters=0,
        verbosity="WARNING",
        **kwargs,
    )


def _answers(results):
    return {s["doc_id"]: s["resps"][0][0] for s in results["samples"][TASKS[0]]}


def test_entry_point_resolves_the_model_class():
    from lmms_eval.models import get_model

    assert get_model("prunebench") is PruneBenchLMM
    assert get_model("prunebench_llava") is PruneBenchLMM


def test_model_args_from_the_cli_build_the_identity(tiny_llava):
    # what `lmms-eval --model prunebench --model_args pretrained=tiny-llava,method=fastv,budget=300,fastv.layer=1` builds
    lm = PruneBenchLMM.create_from_arg_string(
        "pretrained=tiny-llava,method=fastv,budget=300,budget_mode=final,fastv.layer=1", {"batch_size": 2, "device": "cpu"}
    )
    ident = lm.identity
    assert ident["method"] == "fastv" and ident["budget"] == 300 and ident["budget_mode"] == "final"
    assert ident["method_params"]["layer"] == 1 and ident["method_params"]["query"] == "last"  # every parameter, defaults included
    assert lm.batch_size == 2
    with pytest.raises(Exception, match="no parameter"):
        PruneBenchLMM.from_adapter(tiny_llava, method="fastv", budget=64, bogus=1)


def test_identity_separates_budgets_and_parameters(lm, tmp_path):
    fingerprints = set()
    cells = [("random", 64, None), ("random", 128, None), ("fastv", 64, {"layer": 1}), ("fastv", 64, {"layer": 2}), (NO_METHOD, None, None)]
    for i, (method, budget, params) in enumerate(cells):
        lm.configure(method, budget, budget_mode="final", params=params)
        assert isinstance(lm.spec, CellSpec) and lm.spec.budget == budget
        assert f"budget={budget if budget is not None else 'none'}" in lm.model_args
        cache = ResponseCache.create(str(tmp_path / f"c{i}"), model=lm, model_args=lm.model_args)  # what simple_evaluate builds
        fingerprints.add(cache._model_fingerprint_hash)
        cache.close() if hasattr(cache, "close") else None
    assert len(fingerprints) == len(cells)


def test_response_cache_has_no_cross_talk_between_budgets(lm, task_manager, tmp_path):
    cache = str(tmp_path / "cache")
    lm.configure("random", 16)
    first = _evaluate(lm, task_manager, use_cache=cache)
    assert lm.timing["requests"] == 3
    lm.configure("random", 500)
    other = _evaluate(lm, task_manager, use_cache=cache)
    assert lm.timing["requests"] == 3, "a different budget must not be answered from the cache"
    lm.configure("random", 16)
    again = _evaluate(lm, task_manager, use_cache=cache)
    assert lm.timing["requests"] == 0, "the same identity is answered from the cache"
    assert _answers(again) == _answers(first)
    assert set(_answers(other)) == set(_answers(first))


def test_batched_answers_equal_batch_one_and_the_batch_size_is_in_the_identity(lm, task_manager):
    lm.configure("random", 64, batch_size=3)
    batched, batched_id = _answers(_evaluate(lm, task_manager)), str(lm)
    lm.configure("random", 64, batch_size=1)
    single, single_id = _answers(_evaluate(lm, task_manager)), str(lm)
    lm.configure("random", 64, batch_size=2)
    assert batched == single  # on the tiny random model; the trained toy model can differ at near-ties
    assert batched_id != single_id, "answers at another batch size must not come from the response cache"
    assert lm.identity["batch_size"] == 2 and lm.identity["device_type"] == "cpu" and lm.identity["attn_implementation"] == "sdpa"


def test_loglikelihood_is_refused_clearly(lm):
    with pytest.raises(NotImplementedError, match="generate_until"):
        lm.loglikelihood([])


def test_budget_on_the_unpruned_model_is_an_error(lm):
    with pytest.raises(Exception, match="no budget"):
        lm.configure(NO_METHOD, 64)


def test_preprocessed_batches_are_reused_across_cells(tiny_llava, task_manager):
    lm = PruneBenchLMM.from_adapter(tiny_llava, pretrained="tiny-llava", batch_size=2)
    lm.configure("random", 64)
    first = _answers(_evaluate(lm, task_manager))
    assert lm.timing["prepare_s"] > 0 and lm._batches.bytes > 0
    lm.configure("random", 64)
    again = _answers(_evaluate(lm, task_manager))
    assert lm.timing["prepare_s"] == 0 and lm.timing["visual_s"] == 0, "the second cell re-rendered or re-preprocessed its images"
    assert again == first
    tiny = PruneBenchLMM.from_adapter(tiny_llava, pretrained="tiny-llava", batch_size=2, cache_mb=0)
    _evaluate(tiny, task_manager)
    assert tiny._batches.bytes == 0


def test_layout_model_arg_loads_the_five_crop_layout_and_joins_the_identity(tiny_llava):
    lm = PruneBenchLMM.create_from_arg_string("pretrained=tiny-llava_next,method=random,budget=64,layout=fivecrop", {"batch_size": 1})
    assert lm.adapter.layout == "fivecrop" and lm.identity["layout"] == "fivecrop" and "layout=fivecrop" in lm.model_args
    anyres = PruneBenchLMM.create_from_arg_string("pretrained=tiny-llava_next,method=random,budget=64", {"batch_size": 1})
    assert anyres.identity["layout"] == "anyres" and str(anyres) != str(lm)
    with pytest.raises(Exception, match="LLaVA-NeXT models only"):
        PruneBenchLMM.create_from_arg_string("pretrained=tiny-llava,method=random,budget=64,layout=fivecrop", {})


def test_identity_holds_the_weights_fingerprint(lm, tmp_path, monkeypatch):
    import os

    import prunebench.toy

    lm.configure("random", 64)
    assert lm.identity["weights"]["source"].startswith("built-in") and "weights" not in lm.model_args
    folder = tmp_path / "toy"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights v1")
    monkeypatch.setattr(prunebench.toy, "TOY_MODEL_DIR", folder)
    toy = PruneBenchLMM.from_adapter(lm.adapter, pretrained="toy-llava")
    before = str(toy.configure("random", 64))
    (folder / "model.safetensors").write_bytes(b"weights v2, retrained")
    os.utime(folder / "model.safetensors", (1e9, 1e9))
    retrained = PruneBenchLMM.from_adapter(lm.adapter, pretrained="toy-llava")
    assert str(retrained.configure("random", 64)) != before, "a retrained checkpoint must not share cached answers"


def test_video_frames_are_uniform_and_report_the_sampled_rate(monkeypatch):
    """8 of 90 frames of a 30 fps clip (3 s) are 8/3 frames per second: the rate Qwen2.5-VL's M-RoPE time axis needs."""
    import sys
    import types
    from fractions import Fraction

    from PIL import Image

    from prunebench.models.video import video_frames

    class Frame:
        def __init__(self, i):
            self.i = i

        def to_image(self):
            return Image.new("L", (4, 4), self.i)

    class Container:
        streams = types.SimpleNamespace(video=[types.SimpleNamespace(average_rate=Fraction(30))])

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def decode(self, video):
            return [Frame(i) for i in range(90)]

    monkeypatch.setitem(sys.modules, "av", types.SimpleNamespace(open=lambda path: Container()))
    frames, fps = video_frames("clip.mp4")
    assert [f.getpixel((0, 0))[0] for f in frames] == [0, 11, 22, 33, 45, 56, 67, 78]
    assert all(f.mode == "RGB" for f in frames) and fps == pytest.approx(8 / 3)


def test_one_spec_reaches_the_model_and_a_spec_for_another_model_is_refused(lm):
    spec = lm.spec_for("fastv", 32, params={"layer": 1}, budget_mode="final")
    assert lm.configure(spec).spec is spec and lm.budget == 32 and lm.method.layer == 1 and lm.budget_mode == "final"
    with pytest.raises(Exception, match="does not match the loaded model"):
        lm.configure(spec.replace(preprocess="paper"))
    with pytest.raises(Exception, match="either a CellSpec"):
        lm.configure(spec, 64)


def test_the_progress_bar_names_the_task_and_the_cell(lm, task_manager):
    import io

    lm.configure("random", 64)
    lm.progress, lm.progress_file = True, io.StringIO()
    try:
        _evaluate(lm, task_manager)
        text = lm.progress_file.getvalue()
    finally:
        lm.progress, lm.progress_file = True, None
    assert "shapes_count random@64" in text, text
