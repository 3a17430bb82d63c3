"""Sweeps: records per the store schema, baseline reuse, resume, failing and infeasible cells, SIGKILL, config, status."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

pytest.importorskip("lmms_eval.evaluator")

from prunebench.core import SelectionError, VisionStagePruner
from prunebench.registry import _ORIGIN, _REGISTRY, register_method
from prunebench.runner import Sweep, resolve_config
from prunebench.runner.cli import run_status, status_lines
from prunebench.store import ResultStore

SMALL = dict(model="tiny-llava", tasks="shapes_count", limit=2, batch_size=2, latency={"samples": 2, "warmup": 1, "new_tokens": 2})


@pytest.fixture
def boom():
    @register_method("boom_test")
    @dataclass
    class Boom(VisionStagePruner):
        def select_vision(self, view, keep):
            raise SelectionError("boom: a method plugin that raises")  # a PruneBenchError too: still only this cell fails

    yield "boom_test"
    _REGISTRY.pop("boom_test", None)
    _ORIGIN.pop("boom_test", None)


def _sweep(tmp_path, name="run", **overrides):
    config = resolve_config(None, {**SMALL, "output": str(tmp_path / name), **overrides})
    return Sweep(config, progress=False, echo=lambda _m: None)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_llava):
    """One small sweep shared by the record checks: baseline, random@64, visionzip@64, fastv@64 (infeasible in average mode)."""
    root = tmp_path_factory.mktemp("sweep")
    sweep = _sweep(root, methods="random,fastv,visionzip", budgets="64")
    sweep._adapter = tiny_llava  # the session's model: load once
    return sweep, sweep.run()


def done_flops(record):
    return record["flops"]["analytic_tflops"]


def test_records_follow_the_store_schema(finished):
    sweep, _result = finished
    records = {(r["method"], r["budget"]): r for r in sweep.store.records()}
    assert set(records) == {("none", None), ("random", 64), ("fastv", 64), ("visionzip", 64)}
    # random@64 and visionzip@64 share a token pattern, hence the analytic count, but each is measured with its own selection
    assert sorted(k[0] for k in sweep._flops_cache) == ["none", "random", "visionzip"]
    assert records[("visionzip", 64)]["flops"]["analytic_tflops"] == done_flops(records[("random", 64)])
    assert records[("visionzip", 64)]["flops"]["vision_measured_tflops"] > records[("random", 64)]["flops"]["vision_measured_tflops"]
    done = records[("random", 64)]
    for field in (
        "key",
        "status",
        "model",
        "suite",
        "task_names",
        "method",
        "method_params",
        "budget",
        "budget_mode",
        "budget_scope",
        "limit",
        "seed",
        "preprocess",
        "tasks",
        "relacc",
        "agreement",
        "tokens",
        "latency_ms",
        "flops",
        "kv_cache",
        "peak_memory_mb",
        "env",
        "error",
        "started",
        "finished",
    ):
        assert field in done, field
    assert done["status"] == "done" and done["budget_scope"] == "image" and done["preprocess"] == "hf"
    assert done["tokens"]["final"] == 64 and done["tokens"]["layer_average"] == 64 and done["tokens"]["per_layer"] == [64] * 4
    assert set(done["tasks"]) == {"shapes_count"} and done["tasks"]["shapes_count"]["n"] == 2
    assert 0.0 <= done["agreement"] <= 1.0
    for part in ("ttft", "prefill", "decode_per_token", "total", "vision", "select", "select_vision", "select_llm", "llm_prefill", "assemble"):
        assert done["latency_ms"][part]["median"] <= done["latency_ms"][part]["p90"], part
    lat = {k: v["median"] for k, v in done["latency_ms"].items()}
    assert lat["ttft"] > lat["vision"] and lat["ttft"] > lat["prefill"] and lat["select_llm"] == 0.0  # random selects before the LLM
    assert lat["total"] > lat["ttft"] and "ttft = vision" in done["latency_parts"]
    assert done["flops"]["llm_rel_diff"] < 1e-3 and done["flops"]["llm_agree"] and done["flops"]["measured_tflops"] > 0
    assert done["contract_ok"] and done["warnings"] == []
    assert done["weights"]["source"].startswith("built-in") and done["versions"]["lmms_eval"] and done["code"] and done["task_files"]
    assert done["tasks"]["shapes_count"]["metrics"] == {"exact_match": done["tasks"]["shapes_count"]["score"]}
    assert done["peak_memory_growth_mb"] is not None and 0 <= done["peak_memory_growth_mb"] <= done["peak_memory_mb"]
    assert done["kv_cache"]["measured_mb"] == pytest.approx(done["kv_cache"]["analytic_mb"])
    assert done["env"]["versions"]["lmms_eval"] and done["env"]["attn_implementation"] == "sdpa"
    baseline = records[("none", None)]
    assert baseline["relacc"] == 1.0 and baseline["agreement"] == 1.0
    assert baseline["flops"]["analytic_tflops"] > 2 * done["flops"]["analytic_tflops"]
    samples = sweep.store.samples(done["key"])
    assert len(samples) == 2 and {"task", "doc_id", "answer", "target", "score"} <= set(samples[0])
    assert (sweep.store.root / "config.yaml").exists() and (sweep.store.root / "suite.json").exists()
    assert not any((sweep.store.root / "partial").glob("*/*.json")), "finished cells leave no partial results behind"


def test_an_unreachable_average_budget_is_stored_as_infeasible(finished):
    sweep, _ = finished
    cell = next(c for c in sweep.cells if c.method == "fastv")
    stored = ResultStore(sweep.store.root).get(cell.key)  # read back from disk, as a rerun or `prunebench status` does
    assert stored["status"] == "infeasible" and stored["budget_mode"] == "average"
    assert "cannot go below" in stored["error"] and "budget-mode final" in stored["error"]
    assert [c["label"] for c in run_status(sweep.store.root)["infeasible"]] == ["fastv@64"]


def test_flops_are_counted_once_per_method_and_token_pattern(finished, monkeypatch):
    import types

    from prunebench.resolve import resolve
    from prunebench.runner import measure
    from prunebench.runner.cells import Cell

    sweep, _ = finished
    calls = []
    real = measure.measure_prefill_flops

    def counting(adapter, method, *args, **kwargs):
        calls.append(method.name)
        return real(adapter, method, *args, **kwargs)

    monkeypatch.setattr(measure, "measure_prefill_flops", counting)
    sweep._flops_cache.clear()
    random_cell = next(c for c in sweep.cells if c.method == "random")
    stats = types.SimpleNamespace(tokens_per_layer=[64] * 4, text_tokens=10, plan=types.SimpleNamespace(vision=64))
    visionzip_cell = Cell(random_cell.spec.replace(method=resolve("visionzip", "tiny-llava", "llava")), "k", {})
    first = sweep._flops(random_cell, stats)
    assert sweep._flops(random_cell, stats) == first and calls == ["random"], "same method and pattern: counted once"
    sweep._flops(visionzip_cell, stats)
    assert calls == ["random", "visionzip"], "another method with the same token pattern is counted with its own selection"


def test_rerun_skips_and_baseline_is_reused_by_a_new_run(finished, tmp_path, tiny_llava):
    sweep, _ = finished
    again = _sweep(sweep.store.root.parent, methods="random,fastv,visionzip", budgets="64")
    again._adapter = tiny_llava
    before = {r["key"]: r["finished"] for r in again.store.records()}
    assert again.run().computed == []
    assert {r["key"]: r["finished"] for r in again.store.records()} == before
    # another run folder next to it finds the baseline in <results>/.baselines and does not evaluate it again
    other = _sweep(sweep.store.root.parent, name="other", methods="random", budgets="32")
    other._adapter = tiny_llava
    result = other.run()
    assert other.cells[0].key not in result.computed and len(result.computed) == 1
    assert other.store.get(other.cells[0].key)["reused_from"]


def test_a_failing_cell_is_recorded_and_the_sweep_goes_on(boom, tmp_path, tiny_llava):
    sweep = _sweep(tmp_path, methods=f"{boom},random", budgets="64", baseline_cache=str(tmp_path / "bl"))
    sweep._adapter = tiny_llava
    sweep.run()
    records = {r["method"]: r for r in sweep.store.records()}
    assert records[boom]["status"] == "failed" and "boom: a method plugin that raises" in records[boom]["traceback"]
    assert records["random"]["status"] == "done"
    status = run_status(sweep.store.root)
    assert [c["label"] for c in status["failed"]] == [f"{boom}@64"] and len(status["done"]) == 2 and not status["pending"]
    assert any("failed" in line and "boom" in line for line in status_lines(sweep.store.root))


def test_config_yaml_and_command_line(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text("model: tiny-llava\nmethods: [random, fastv]\nbudgets: [16, 32]\nmethod_args: {fastv: {layer: 3}}\nlimit: 5\n")
    config = resolve_config(str(path), {"budgets": "64,128", "method_args": ["fastv.query=mean"], "limit": None})
    assert config["budgets"] == [64, 128] and config["limit"] == 5 and config["methods"] == ["random", "fastv"]
    assert config["method_args"] == {"fastv": {"layer": 3, "query": "mean"}}
    sweep = Sweep(config, progress=False)
    fastv = [c for c in sweep.cells if c.method == "fastv"]
    assert fastv[0].params["layer"] == 3 and fastv[0].params["query"] == "mean"
    assert len({c.key for c in sweep.cells}) == len(sweep.cells) == 5
    with pytest.raises(Exception, match="METHOD.PARAM=VALUE"):
        resolve_config(None, {"method_args": ["layer=3"]})
    with pytest.raises(Exception, match="unknown key"):
        (tmp_path / "bad.yaml").write_text("budgetz: [1]\n")
        resolve_config(str(tmp_path / "bad.yaml"))


@pytest.mark.parametrize(
    "text,message",
    [
        ("methods: [random\nbudgets: 32\n", r"not valid YAML at line 2, column 8: did not find expected ',' or '\]'"),
        ("- random\n- fastv\n", "must be a mapping of sweep keys"),
        ("latency: 5\n", "latency must be a mapping with keys samples, warmup, new_tokens"),
        ("latency: {samples: 0}\n", "latency needs samples >= 1"),
        ("batch_size: many\n", "--batch_size must be a number, got 'many'"),
        ("methods: ${nope}\n", "Interpolation key 'nope' not found"),
        ("methods: {random: 1}\n", "each key takes what its flag takes"),
        ("limit: -3\n", "--limit must be a number of documents per task"),
    ],
)
def test_a_malformed_config_is_a_clear_error(tmp_path, text, message):
    from prunebench.core import PruneBenchError

    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    with pytest.raises(PruneBenchError, match=message):
        resolve_config(str(path))


PLUGIN = """
import time
from dataclasses import dataclass
from prunebench.core import Selection, VisionStagePruner, top_k
from prunebench.registry import register_method

@register_method("slow_test")
@dataclass
class Slow(VisionStagePruner):
    pause: float = 0.05
    def select_vision(self, view, keep):
        time.sleep(self.pause)
        return Selection(top_k(view.features.norm(dim=-1), keep))
"""


@pytest.mark.slow
def test_sigkill_loses_at_most_the_cell_in_flight(tmp_path, tiny_llava):
    (tmp_path / "slowplug.py").write_text(PLUGIN)
    out = tmp_path / "killed"
    args = [
        "--model",
        "tiny-llava",
        "--tasks",
        "shapes_count",
        "--limit",
        "2",
        "--batch_size",
        "1",
        "--methods",
        "slow_test",
        "--budgets",
        "8,16,24,32,40",
        "--plugins",
        "slowplug",
        "--latency-samples",
        "2",
        "--latency-warmup",
        "1",
        "--latency-new-tokens",
        "2",
        "--output",
        str(out),
        "--no-progress",
    ]
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "prunebench.cli", "run", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 400  # generous for a loaded machine; the loop ends as soon as two cells are stored
    cells = out / "cells"
    while time.time() < deadline and proc.poll() is None:
        if cells.is_dir() and len(list(cells.glob("*.json"))) >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"the sweep ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = ResultStore(out)
    before = {r["key"]: r["started"] for r in store.records()}
    assert 2 <= len(before) < 6 and all(r["status"] == "done" for r in store.records())
    sys.path.insert(0, str(tmp_path))
    try:
        import importlib

        importlib.import_module("slowplug")
        config = resolve_config(None, {**SMALL, "batch_size": 1, "methods": "slow_test", "budgets": "8,16,24,32,40", "plugins": "slowplug", "output": str(out)})
        sweep = Sweep(config, progress=False, echo=lambda _m: None)
        sweep._adapter = tiny_llava
        result = sweep.run()
    finally:
        sys.path.remove(str(tmp_path))
        _REGISTRY.pop("slow_test", None)
        _ORIGIN.pop("slow_test", None)
    after = {r["key"]: r["started"] for r in store.records()}
    assert len(after) == 6 and all(r["status"] == "done" for r in store.records())
    assert {k: after[k] for k in before} == before, "finished cells were recomputed"
    assert set(result.computed) == set(after) - set(before)


def test_command_line_dry_run_and_status(tmp_path, capsys):
    from prunebench.cli import main

    out = tmp_path / "dry"
    code = main(
        [
            "run",
            "--model",
            "tiny-llava",
            "--tasks",
            "shapes_count",
            "--methods",
            "random,fastv",
            "--budgets",
            "8,16",
            "--method-args",
            "fastv.layer=1",
            "--budget-mode",
            "final",
            "--output_path",
            str(out),
            "--dry-run",
        ]
    )
    text = capsys.readouterr().out
    assert code == 0 and "budget_mode: final" in text and text.count("pending") == 5 and "'layer': 1" in text
    assert main(["run", "--model", "tiny-llava", "--methods", "random", "--budgets", "x", "--dry-run"]) == 2
    assert "budgets must be positive integers" in capsys.readouterr().err
    assert main(["status", str(tmp_path / "nowhere")]) == 2


def test_leaderboard_files_and_fallback_table(finished):
    from prunebench.runner.cli import simple_leaderboard, write_leaderboard

    sweep, _ = finished
    paths = write_leaderboard(sweep.store, echo=lambda _m: None)
    assert [p.name for p in paths] == ["leaderboard.md", "leaderboard.csv"] and all(p.stat().st_size for p in paths)
    df = simple_leaderboard(list(sweep.store.records()))  # the table printed when prunebench.report is not installed
    assert {"method", "budget", "shapes_count", "RelAcc", "agreement", "TTFT ms", "TFLOPs", "KV MB"} <= set(df.columns)
    assert df.iloc[0]["method"] == "none" and len(df) == 4


def test_gen_kwargs_override_the_suite_and_change_the_key(tmp_path):
    plain = Sweep(resolve_config(None, {**SMALL, "output": str(tmp_path / "a")}), progress=False)
    short = Sweep(resolve_config(None, {**SMALL, "output": str(tmp_path / "b"), "gen_kwargs": "max_new_tokens=2,do_sample=false"}), progress=False)
    assert short.suite.generation_kwargs == {"max_new_tokens": 2, "do_sample": False}
    assert short.suite.gen_kwargs_string() == "max_new_tokens=2,do_sample=False"
    assert {c.key for c in plain.cells}.isdisjoint(c.key for c in short.cells)


BROKEN_TASK = """task: broken_count
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_visual: !function broken_utils.doc_to_visual
doc_to_text: !function broken_utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 4
  do_sample: false
  temperature: 0
process_results: !function broken_utils.process_results
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""

BROKEN_UTILS = """
import os
from prunebench.suites.shapes.utils import doc_to_text, doc_to_visual, process_results as _score

def process_results(doc, results):
    if os.path.exists(os.environ.get("PRUNEBENCH_TEST_BROKEN", "")):
        raise ValueError("broken_count: scoring fails while the marker file exists")
    return _score(doc, results)
"""


def test_tasks_run_one_by_one_a_failing_task_is_kept_and_a_rerun_resumes_at_task_level(tmp_path, tiny_llava, monkeypatch):
    from prunebench.suites.shapes import TASK_DIR

    tasks_dir = tmp_path / "tasks"
    tasks_dir.mkdir()
    (tasks_dir / "broken_count.yaml").write_text(BROKEN_TASK.format(data=TASK_DIR / "test_count.jsonl"))
    (tasks_dir / "broken_utils.py").write_text(BROKEN_UTILS)
    marker = tmp_path / "BROKEN"  # outside the task folder, whose files are part of the cell key
    marker.write_text("")
    monkeypatch.setenv("PRUNEBENCH_TEST_BROKEN", str(marker))
    overrides = dict(methods="random", budgets="64", tasks="shapes_count,broken_count", include_path=[str(tasks_dir)], baseline_cache=str(tmp_path / "bl"))
    evaluated = []
    import prunebench.runner.sweep as sweep_module

    real = sweep_module.evaluate
    monkeypatch.setattr(sweep_module, "evaluate", lambda lm, tasks, *a: (evaluated.append((lm.method.name, *tasks)), real(lm, tasks, *a))[1])

    sweep = _sweep(tmp_path, **overrides)
    sweep._adapter = tiny_llava
    sweep.run()
    records = {r["method"]: r for r in sweep.store.records()}
    for record in records.values():
        assert record["status"] == "failed" and "1 of 2 task(s) failed" in record["error"]
        assert "scoring fails while the marker file exists" in record["task_errors"]["broken_count"]["traceback"]
        assert "ValueError" in record["traceback"]
        assert set(record["tasks"]) == {"shapes_count"}, "the task that finished is kept next to the one that failed"
    assert sorted(evaluated) == sorted([(m, t) for m in ("none", "random") for t in ("shapes_count", "broken_count")])

    marker.unlink()
    evaluated.clear()
    again = _sweep(tmp_path, **overrides)
    again._adapter = tiny_llava
    again.run()
    assert sorted(evaluated) == [("none", "broken_count"), ("random", "broken_count")], "finished tasks were evaluated again"
    records = {r["method"]: r for r in again.store.records()}
    assert all(r["status"] == "done" and set(r["tasks"]) == {"shapes_count", "broken_count"} for r in records.values())
    assert len(again.store.samples(records["random"]["key"])) == 4


def test_retraining_the_toy_model_invalidates_its_cells_and_baseline(tmp_path, monkeypatch):
    import shutil

    import prunebench.toy

    folder = tmp_path / "toy-llava"
    shutil.copytree(prunebench.toy.TOY_MODEL_DIR, folder)
    monkeypatch.setattr(prunebench.toy, "TOY_MODEL_DIR", folder)
    before = _sweep(tmp_path, model="toy-llava", methods="random", budgets="16")
    assert before.cells[0].fields["weights"]["source"] == "folder"
    with open(folder / "model.safetensors", "ab") as handle:  # new weights under the same name
        handle.write(b"\0")
    after = _sweep(tmp_path, model="toy-llava", methods="random", budgets="16")
    assert before.cells[0].key != after.cells[0].key and before.cells[1].key != after.cells[1].key
    unchanged = _sweep(tmp_path, model="toy-llava", methods="random", budgets="16")
    assert [c.key for c in unchanged.cells] == [c.key for c in after.cells], "the key is stable while nothing changes"


def test_saved_config_replays_with_the_same_cells(tmp_path):
    sweep = _sweep(tmp_path, methods="random,fastv", budgets="16,32", method_args=["fastv.layer=1"], gen_kwargs="max_new_tokens=3")
    sweep.write_plan()
    replay = Sweep(resolve_config(str(sweep.store.root / "config.yaml")), progress=False)
    assert [c.key for c in replay.cells] == [c.key for c in sweep.cells]
    assert replay.suite.to_dict() == json.loads((sweep.store.root / "suite.json").read_text())


def test_budgets_must_be_whole_positive_numbers(tmp_path):
    from prunebench.core import PruneBenchError
    from prunebench.runner.config import parse_budgets

    assert parse_budgets([32, 64.0, "128", "32"]) == [32, 64, 128]
    for bad in ([2.5], [True], ["2.5"], [0], ["-8"], ["x"]):
        with pytest.raises(PruneBenchError, match="positive integers"):
            parse_budgets(bad)
    path = tmp_path / "frac.yaml"
    path.write_text("budgets: [2.5]\n")
    with pytest.raises(PruneBenchError, match="2.5"):
        resolve_config(str(path))


def test_a_budget_above_the_visual_tokens_stops_the_sweep_before_any_cell(tmp_path, tiny_llava):
    from prunebench.core import PruneBenchError

    sweep = _sweep(tmp_path, methods="random", budgets="64,700", baseline_cache=str(tmp_path / "bl"))
    sweep._adapter = tiny_llava
    with pytest.raises(PruneBenchError, match=r"budget 700 exceeds the 576 visual tokens.*choose budgets <= 576 \(e.g. --budgets 64\)"):
        sweep.run()
    assert not list(sweep.store.records())


def test_seed_accepts_one_value_or_lmms_evals_equal_comma_form():
    from prunebench.core import PruneBenchError

    assert resolve_config(None, {"seed": "7"})["seed"] == 7
    assert resolve_config(None, {"seed": "3,3,3,3"})["seed"] == 3
    with pytest.raises(PruneBenchError, match="one seed"):
        resolve_config(None, {"seed": "0,1234,1234,1234"})


def test_layout_is_a_run_option_an_lmms_arg_and_part_of_the_key(tmp_path):
    from prunebench.adapters import llava_next
    from prunebench.core import PruneBenchError
    from prunebench.runner import config

    assert config.LAYOUTS == llava_next.LAYOUTS  # the run option offers exactly the adapter's layouts

    anyres = _sweep(tmp_path, name="a", model="tiny-llava_next", methods="random", budgets="64")
    five = _sweep(tmp_path, name="b", model="tiny-llava_next", methods="random", budgets="64", layout="fivecrop")
    assert {c.key for c in anyres.cells}.isdisjoint(c.key for c in five.cells)
    assert five.cells[1].fields["layout"] == "fivecrop"
    with pytest.raises(PruneBenchError, match="LLaVA-NeXT models only"):
        _sweep(tmp_path, name="c", layout="fivecrop")  # tiny-llava is LLaVA-1.5
    with pytest.raises(PruneBenchError, match="--layout must be one of"):
        resolve_config(None, {"layout": "grid"})


def test_latency_entries_partition_the_time_to_first_token(tiny_llava, samples):
    from prunebench.engine import Pruner
    from prunebench.registry import create_method
    from prunebench.runner.measure import sample_latency

    # by hand: selection 5 of which 2 in the LLM (inside the prefill window of 30)
    parts = sample_latency(
        {
            "vision_ms": 10,
            "select_ms": 5,
            "select_vision_ms": 3,
            "select_llm_ms": 2,
            "assemble_ms": 7,
            "prefill_ms": 30,
            "ttft_ms": 50,
            "generate_ms": 50,
            "total_ms": 70,
            "decode_ms_per_token": 5,
        }
    )
    assert parts["ttft"] == 50 and parts["select_vision"] == 3 and parts["llm_prefill"] == 28 and parts["assemble"] == 7
    with Pruner(tiny_llava, create_method("fastv", layer=1), 64, budget_mode="final") as pruner:
        out = pruner.generate(tiny_llava.prepare(samples[:1]), max_new_tokens=3, min_new_tokens=3)
        parts = sample_latency(out.stats.timings_ms)
    assert parts["select_llm"] > 0, "FastV selects inside the LLM"
    assert min(parts.values()) >= 0
    whole = parts["vision"] + parts["select_vision"] + parts["assemble"] + parts["select_llm"] + parts["llm_prefill"]
    assert whole == pytest.approx(parts["ttft"], rel=1e-9)
    assert parts["total"] == pytest.approx(parts["ttft"] + parts["generate"] - parts["prefill"], rel=1e-9)


def test_peak_memory_is_per_cell(tmp_path):
    import mmap

    import torch

    from prunebench.runner.measure import PeakMemory, _reset_peak_rss

    if not _reset_peak_rss():
        pytest.skip("this platform cannot reset the peak RSS")
    with PeakMemory(torch.device("cpu")) as big:
        block = mmap.mmap(-1, 64 << 20)  # fresh pages (a malloc could reuse resident ones freed by earlier tests)
        for i in range(0, len(block), mmap.PAGESIZE):
            block[i] = 1
        block.close()
    with PeakMemory(torch.device("cpu")) as small:
        pass
    big_peak, big_growth, _ = big.result()
    small_peak, small_growth, kind = small.result()
    assert big_growth >= 60 and small_growth < 30 and small_peak < big_peak - 30, (big.result(), small.result())
    assert "this cell" in kind


def test_stale_temporary_files_are_removed_but_fresh_ones_kept(tmp_path):
    store = ResultStore(tmp_path / "run")
    store.put({"key": "k", "status": "failed", "method": "random", "budget": 8, "error": "boom"})  # {"status": "done"} alone is not a record
    stale, fresh = store.cells_dir / ".k.json.abc.tmp", store.cells_dir / ".k.json.def.tmp"
    stale.write_text("{")
    fresh.write_text("{")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    assert store.clean_stale_tmp() == [stale] and fresh.exists() and store.get("k")["status"] == "failed"


def test_lmms_eval_progress_redraws_are_dropped_and_other_output_kept():
    import io

    from tqdm import tqdm

    from prunebench.runner.evaluate import DropRedraws

    real = io.StringIO()
    quiet = DropRedraws(real)
    for _ in tqdm(range(3), file=quiet, desc="Postprocessing", mininterval=0):
        pass
    quiet.write("WARNING something lmms-eval says\n")
    print("a line printed", file=quiet)  # print writes its newline on its own: that one is kept
    # a bar at position 1 (under the sweep's bar, or one lmms-eval left open) moves down and up around each redraw
    with tqdm(total=1, file=io.StringIO(), desc="cells"):
        for _ in tqdm(range(3), file=quiet, desc="Postprocessing", mininterval=0):
            pass
    print("done", file=quiet)
    assert real.getvalue() == "WARNING something lmms-eval says\na line printed\ndone\n"


def test_task_scores_keep_every_metric_and_the_first_as_score():
    results = {
        "results": {"t": {"alias": "t", "exact_match,none": 0.5, "exact_match_stderr,none": "N/A", "anls,none": 0.25, "exact_match,flexible": 0.75}},
        "n-samples": {"t": {"effective": 4}},
    }
    from prunebench.runner.results import task_scores

    assert task_scores(results) == {
        "t": {"metric": "exact_match", "score": 0.5, "n": 4, "metrics": {"exact_match": 0.5, "anls": 0.25, "exact_match,flexible": 0.75}}
    }


@pytest.mark.slow
def test_relacc_and_agreement_against_a_nonzero_baseline(tmp_path):
    """The shipped toy model answers some shapes questions right, so RelAcc and agreement have real values to check."""
    from prunebench.toy import TOY_MODEL_DIR

    if not (TOY_MODEL_DIR / "config.json").exists():
        pytest.skip("the toy checkpoint is not there")
    sweep = _sweep(
        tmp_path,
        model="toy-llava",
        tasks="shapes_count,shapes_exist",
        methods="random",
        budgets="8",
        limit=6,
        batch_size=6,
        latency={"samples": 1, "warmup": 0, "new_tokens": 1},
        baseline_cache=str(tmp_path / "bl"),
    )
    sweep.run()
    records = {r["method"]: r for r in sweep.store.records()}
    base, pruned = records["none"], records["random"]
    assert base["status"] == pruned["status"] == "done"
    assert any(e["score"] > 0 for e in base["tasks"].values()), "the toy model should answer some questions right"
    ratios = [pruned["tasks"][t]["score"] / e["score"] for t, e in base["tasks"].items() if e["score"] > 0]
    assert pruned["relacc"] == pytest.approx(sum(ratios) / len(ratios))
    assert all(pruned["tasks"][t]["baseline"] == base["tasks"][t]["score"] for t in base["tasks"])
    ref = {(s["task"], s["doc_id"]): s["answer"] for s in sweep.store.samples(base["key"])}
    rows = sweep.store.samples(pruned["key"])
    assert len(rows) == 12 and pruned["agreement"] == pytest.approx(sum(r["answer"] == ref[(r["task"], r["doc_id"])] for r in rows) / 12)
    assert pruned["weights"]["source"] == "folder" and len(pruned["weights"]["sha256"]) == 64


@pytest.mark.slow
def test_lmms_eval_command_line_runs_the_prunebench_model(tmp_path):
    from prunebench.suites.shapes import TASK_DIR

    out = tmp_path / "lmms"
    proc = subprocess.run(
        [
            "lmms-eval",
            "--model",
            "prunebench",
            "--model_args",
            "pretrained=tiny-llava,method=random,budget=64",
            "--tasks",
            "shapes_count",
            "--limit",
            "2",
            "--batch_size",
            "2",
            "--include_path",
            str(TASK_DIR),
            "--output_path",
            str(out),
            "--log_samples",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = list(out.rglob("*results*.json"))
    assert found, f"no results file under {out}: {list(out.rglob('*'))}"
    data = json.loads(found[0].read_text())
    assert "exact_match,none" in data["results"]["shapes_count"]
    assert "method=random" in json.dumps(data.get("config", {})) and "budget=64" in json.dumps(data.get("config", {}))


@pytest.mark.parametrize("change", [{"batch_size": 1}, {"dtype": "float32"}, {"device": "cuda"}, {"device": "mps"}, "attn_implementation"])
def test_what_can_change_an_answer_is_in_the_cell_and_baseline_keys(tmp_path, monkeypatch, change):
    """Batch size (padded batches round differently; the trained toy model answers differently at 1 and 8), dtype,
    attention implementation and device type each change every key, the baseline's included; records state them."""
    import prunebench.runner.cells as cells

    plain = _sweep(tmp_path, name="a", methods="random", budgets="32")

    def plan(**changes):  # the cells of the same sweep with other settings (devices this machine lacks included)
        return cells.plan_cells({**plain.config, **changes}, plain.model_name, plain.suite.tasks, plain.suite.generation_kwargs, plain.include_paths)

    assert [c.key for c in plan()] == [c.key for c in plain.cells], "the same settings give the same keys"
    if change == "attn_implementation":
        monkeypatch.setattr(cells, "ATTN_IMPLEMENTATION", "eager")
        change = {}
    other = plan(**change)
    assert [c.label for c in plain.cells] == [c.label for c in other] == ["none (unpruned)", "random@32"]
    for a, b in zip(plain.cells, other):
        assert a.key != b.key, f"{change or 'attn_implementation'} must change the key of {a.label}"
        assert {"batch_size", "dtype", "attn_implementation", "device_type"} <= set(a.fields)
    assert plain.cells[1].fields["batch_size"] == 2 and plain.cells[1].fields["device_type"] == "cpu"
    assert plain.cells[1].fields["attn_implementation"] == "sdpa"
    if "device" in change:
        assert [c.key for c in plan(device=change["device"] + ":1")] == [c.key for c in other], "the device index changes no answer"


def test_dry_run_at_another_batch_size_lists_the_finished_cells_as_pending(finished, capsys):
    from prunebench.cli import main

    sweep, _ = finished
    config = str(sweep.store.root / "config.yaml")
    assert main(["run", "--config", config, "--dry-run"]) == 0
    same = capsys.readouterr().out
    assert same.count(" done ") + same.count("  done") >= 3 and "pending" not in same.replace("fastv@64", ""), same
    assert main(["run", "--config", config, "--batch_size", "1", "--dry-run"]) == 0
    other = capsys.readouterr().out
    labels = [c.label for c in sweep.cells]
    assert other.count("pending") == len(labels) and " done " not in other, other


def test_unknown_model_or_task_is_refused_before_the_run_folder_is_written(tmp_path, capsys):
    from prunebench.cli import main

    for name, extra in (("model", ["--model", "no-such/model-anywhere"]), ("task", ["--tasks", "no_such_task"])):
        out = tmp_path / name
        args = ["run", "--methods", "random", "--budgets", "32", "--limit", "2", "--output", str(out), "--no-progress"]
        assert main(args + (extra if name == "model" else ["--model", "tiny-llava", *extra])) == 2
        assert ("cannot load model" if name == "model" else "does not know task") in capsys.readouterr().err
        assert not (out / "plan.json").exists() and not (out / "config.yaml").exists(), f"unknown {name}: the run folder was written"


def test_the_cell_spec_is_built_once_and_refuses_bad_options():
    from prunebench.core import PruneBenchError
    from prunebench.resolve import NoPruning, cell_spec
    from prunebench.spec import BUDGET_SCOPES, CellSpec, parse_budget

    spec = cell_spec("random", "64", model="tiny-llava", batch_size=4, device="cuda:1")
    assert spec.budget == 64 and spec.device_type == "cuda" and spec.batch_size == 4 and spec.label == "random@64"
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.budget = 32  # frozen
    assert spec.replace(budget=32).budget == 32 and spec.budget == 64
    for bad in ({"budget_mode": "median"}, {"budget_scope": "tile"}, {"layout": "grid"}, {"batch_size": 0}, {"preprocess": "x"}):
        with pytest.raises(PruneBenchError):
            spec.replace(**bad)
    for bad in (0, -1, 2.5, True, "x"):
        with pytest.raises(PruneBenchError, match="positive integers"):
            parse_budget(bad)
    assert parse_budget("none") is None and parse_budget(8.0) == 8
    with pytest.raises(PruneBenchError, match="no budget"):
        CellSpec(NoPruning(), 64)
    assert set(BUDGET_SCOPES) == {"image", "video", "crop", "frame"}


def test_latency_records_its_spread_and_the_load_it_ran_under(finished):
    from prunebench.runner.measure import spread

    assert spread([4.0, 1.0, 3.0, 2.0, float("nan")]) == {"median": 2.5, "p90": 3.7, "min": 1.0, "max": 4.0, "q1": 1.75, "q3": 3.25, "iqr": 1.5, "n": 4}
    sweep, _ = finished
    record = next(r for r in sweep.store.records() if r["method"] == "random")
    ttft = record["latency_ms"]["ttft"]
    assert ttft["min"] <= ttft["q1"] <= ttft["median"] <= ttft["q3"] <= ttft["max"] and ttft["iqr"] == pytest.approx(ttft["q3"] - ttft["q1"])
    load = record["load_average"]
    assert record["cpu_count"] >= 1 and set(load) == {"before", "after"}
    if hasattr(os, "getloadavg"):
        from prunebench.report.leaderboard import load_per_core

        assert load["before"] >= 0 and load["after"] >= 0
        assert load_per_core(record) == pytest.approx(max(load.values()) / record["cpu_count"]), "the leaderboard reads the load"
    assert record["batch_size"] == 2 and record["device_type"] == "cpu" and record["attn_implementation"] == "sdpa" and record["dtype"] == "auto"


def test_the_per_cell_line_uses_the_leaderboards_units():
    """RelAcc and agreement in % as in the table (not a fraction beside a percentage), FLOPs in G or T."""
    from prunebench.runner.results import summary

    line = summary({"status": "done", "relacc": 0.9812, "agreement": 0.93, "latency_ms": {"ttft": {"median": 21.84}}, "flops": {"measured_tflops": 0.000436}})
    assert line == "RelAcc 98.1 %, agreement 93.0 %, TTFT 21.8 ms, 0.436 GFLOPs"
    assert summary({"status": "done", "relacc": 1.0, "flops": {"measured_tflops": 3.512}}) == "RelAcc 100.0 %, 3.51 TFLOPs"
