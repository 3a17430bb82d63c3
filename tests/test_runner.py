"""Sweeps: records per the store schema, baseline reuse, resume, failing and infeasible cells, SIGKILL, config, status."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

pytest.importorskip("lmms_eval.evaluator")

from prunebench.core import SelectionError, VisionStagePruner  # noqa: E402
from prunebench.registry import _ORIGIN, _REGISTRY, register_method  # noqa: E402
from prunebench.runner import Sweep, resolve_config  # noqa: E402
from prunebench.runner.cli import status_lines, run_status  # noqa: E402
from prunebench.store import ResultStore  # noqa: E402

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
    sweep, result = finished
    records = {(r["method"], r["budget"]): r for r in sweep.store.records()}
    assert set(records) == {("none", None), ("random", 64), ("fastv", 64), ("visionzip", 64)}
    assert len(sweep._flops_cache) == 2, "FLOPs are counted once per per-layer token pattern (random@64 = visionzip@64)"
    assert records[("visionzip", 64)]["flops"]["analytic_tflops"] == done_flops(records[("random", 64)])
    done = records[("random", 64)]
    for field in ("key", "status", "model", "suite", "task_names", "method", "method_params", "budget", "budget_mode", "budget_scope",
                  "limit", "seed", "preprocess", "tasks", "relacc", "agreement", "tokens", "latency_ms", "flops", "kv_cache",
                  "peak_memory_mb", "env", "error", "started", "finished"):
        assert field in done, field
    assert done["status"] == "done" and done["budget_scope"] == "image" and done["preprocess"] == "hf"
    assert done["tokens"]["final"] == 64 and done["tokens"]["layer_average"] == 64 and done["tokens"]["per_layer"] == [64] * 4
    assert set(done["tasks"]) == {"shapes_count"} and done["tasks"]["shapes_count"]["n"] == 2
    assert 0.0 <= done["agreement"] <= 1.0
    for part in ("prefill", "decode_per_token", "total", "vision", "select"):
        assert done["latency_ms"][part]["median"] <= done["latency_ms"][part]["p90"]
    assert done["flops"]["llm_rel_diff"] < 1e-3 and done["flops"]["measured_tflops"] > 0
    assert done["kv_cache"]["measured_mb"] == pytest.approx(done["kv_cache"]["analytic_mb"])
    assert done["env"]["versions"]["lmms_eval"] and done["env"]["attn_implementation"] == "sdpa"
    baseline = records[("none", None)]
    assert baseline["relacc"] == 1.0 and baseline["agreement"] == 1.0
    assert baseline["flops"]["analytic_tflops"] > 2 * done["flops"]["analytic_tflops"]
    infeasible = records[("fastv", 64)]
    assert infeasible["status"] == "infeasible" and "budget-mode final" in infeasible["error"]
    samples = sweep.store.samples(done["key"])
    assert len(samples) == 2 and {"task", "doc_id", "answer", "target", "score"} <= set(samples[0])
    assert (sweep.store.root / "config.yaml").exists()


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


PLUGIN = '''
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
'''


@pytest.mark.slow
def test_sigkill_loses_at_most_the_cell_in_flight(tmp_path, tiny_llava):
    (tmp_path / "slowplug.py").write_text(PLUGIN)
    out = tmp_path / "killed"
    args = ["--model", "tiny-llava", "--tasks", "shapes_count", "--limit", "2", "--batch_size", "1", "--methods", "slow_test",
            "--budgets", "8,16,24,32,40", "--plugins", "slowplug", "--latency-samples", "2", "--latency-warmup", "1", "--latency-new-tokens", "2",
            "--output", str(out), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "prunebench.cli", "run", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
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
        config = resolve_config(None, {**SMALL, "batch_size": 1, "methods": "slow_test", "budgets": "8,16,24,32,40",
                                       "plugins": "slowplug", "output": str(out)})
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
    code = main(["run", "--model", "tiny-llava", "--tasks", "shapes_count", "--methods", "random,fastv", "--budgets", "8,16",
                 "--method-args", "fastv.layer=1", "--budget-mode", "final", "--output_path", str(out), "--dry-run"])
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
    assert {"method", "budget", "shapes_count", "RelAcc", "agreement", "prefill ms", "TFLOPs", "KV MB"} <= set(df.columns)
    assert df.iloc[0]["method"] == "none" and len(df) == 4


def test_gen_kwargs_override_the_suite_and_change_the_key(tmp_path):
    plain = Sweep(resolve_config(None, {**SMALL, "output": str(tmp_path / "a")}), progress=False)
    short = Sweep(resolve_config(None, {**SMALL, "output": str(tmp_path / "b"), "gen_kwargs": "max_new_tokens=2,do_sample=false"}), progress=False)
    assert short.suite.generation_kwargs == {"max_new_tokens": 2, "do_sample": False}
    assert short.suite.gen_kwargs_string() == "max_new_tokens=2,do_sample=False"
    assert {c.key for c in plain.cells}.isdisjoint(c.key for c in short.cells)
