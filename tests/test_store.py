"""The results store: damage is found, named, set aside (never deleted) and recomputed; one writer per run folder;
outputs follow the umask. (issue 13, points 4 and 5)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from prunebench.core import PruneBenchError
from prunebench.store import ResultStore, RunLocked, atomic_write_text

KEY, BASE = "a" * 16, "b" * 16


def done(key=KEY, method="random", budget=64, **extra):
    return {
        "key": key,
        "status": "done",
        "method": method,
        "budget": budget,
        "tasks": {"shapes_count": {"metric": "exact_match", "score": 0.5}},
        "relacc": 1.0,
        "agreement": 0.9,
        "tokens": {"final": 64},
        **extra,
    }


ROWS = [{"task": "shapes_count", "doc_id": i, "target": "two", "answer": "two", "score": 1.0} for i in range(3)]


def _store(tmp_path, repair=True):
    messages = []
    store = ResultStore(tmp_path / "run", repair=repair, on_damage=messages.append)
    store.put(done(), ROWS)
    store.put(done(BASE, method="none", budget=None), ROWS)
    return store, messages


# -- 13.4: damage found, named, set aside, missing -------------------------------------------------------------------
@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda p: p.write_text(p.read_text()[: len(p.read_text()) // 2]), "truncated JSON"),
        (lambda p: p.write_text("not json at all, a text editor's garbage\n"), "invalid JSON"),
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00binary"), "not UTF-8"),
        (lambda p: p.write_text(json.dumps({"status": "done"})), "no 'key' string"),
        (lambda p: p.write_text(json.dumps({**done(), "tasks": {"shapes_count": {"score": "high"}}})), "no numeric 'score'"),
        (lambda p: p.write_text(json.dumps({**done(), "relacc": "1.0"})), "'relacc' is '1.0'"),
        (lambda p: p.write_text(json.dumps({"key": KEY, "status": "failed", "method": "random", "budget": 64})), "without its 'error' text"),
        (lambda p: p.write_text(json.dumps([1, 2, 3])), "a cell record is a JSON object"),
    ],
)
def test_a_damaged_cell_record_is_set_aside_named_and_counts_as_missing(tmp_path, damage, reason):
    store, messages = _store(tmp_path)
    path = store.path(KEY)
    damage(path)
    original = path.read_bytes()
    assert store.get(KEY) is None and not store.is_done(KEY)
    assert not path.exists(), "set aside, so the next run recomputes the cell"
    (entry,) = store.damaged()
    assert entry["key"] == KEY and entry["file"] == f"cells/{KEY}.json" and reason in entry["reason"]
    assert (store.root / entry["moved_to"]).read_bytes() == original, "moved, never deleted or rewritten"
    assert len(messages) == 1 and str(path) in messages[0] and reason in messages[0] and "\n" not in messages[0]
    assert store.state(KEY)[0] == "damaged" and reason in store.state(KEY)[1]
    assert store.get(BASE) is not None, "nothing else is touched"


def test_status_done_alone_is_not_a_record_and_is_never_written(tmp_path):
    store = ResultStore(tmp_path / "run")
    with pytest.raises(ValueError, match="invalid cell record"):
        store.put({"key": KEY, "status": "done"})
    assert not store.path(KEY).exists()


def test_a_record_whose_key_is_not_its_file_name_is_damaged(tmp_path):
    store, _ = _store(tmp_path)
    store.path(KEY).write_text(json.dumps(done(BASE)))
    assert store.get(KEY) is None and "is not its file name's" in store.damaged()[0]["reason"]


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda p: p.unlink(), "is missing"),
        (lambda p: p.write_text(p.read_text()[:-20]), "does not match the samples_sha256"),
        (lambda p: p.write_text(""), "does not match the samples_sha256"),
    ],
)
def test_a_deleted_or_garbled_baseline_samples_file_damages_the_baseline(tmp_path, damage, reason):
    store, _ = _store(tmp_path)
    samples = store.samples_path(BASE)
    damage(samples)
    assert store.get(BASE) is None, "agreement must not silently become '-': the baseline is recomputed"
    assert not store.path(BASE).exists() and not samples.exists()
    (entry,) = store.damaged()
    assert entry["key"] == BASE and reason in entry["reason"] and f"samples/{BASE}.jsonl" in entry["reason"]
    assert store.get(KEY) is not None


def test_samples_of_an_older_record_without_a_checksum_are_still_parsed(tmp_path):
    store = ResultStore(tmp_path / "run", repair=True, on_damage=lambda m: None)
    atomic_write_text(store.path(KEY), json.dumps(done()))  # as written before records stated samples_sha256
    atomic_write_text(store.samples_path(KEY), json.dumps(ROWS[0]) + "\n" + '{"task": "shapes_count", "doc_')
    assert store.get(KEY) is None and "line 2: truncated JSON" in store.damaged()[0]["reason"]


def test_a_reader_without_the_lock_reports_damage_but_moves_nothing(tmp_path):
    store, _ = _store(tmp_path)
    store.path(KEY).write_bytes(b"\xff\xfe garbage")
    messages = []
    reader = ResultStore(store.root, on_damage=messages.append)  # what status and report use
    assert [r["key"] for r in reader.records()] == [BASE], "no UnicodeDecodeError, the damaged record is not yielded"
    assert store.path(KEY).exists() and not reader.damaged()
    assert reader.state(KEY)[0] == "damaged" and "not UTF-8" in messages[0]
    assert reader.missing_or_damaged([{"key": KEY, "label": "random@64"}, {"key": BASE, "label": "none"}, {"key": "c" * 16, "label": "fastv@64"}]) == [
        {"key": KEY, "label": "random@64", "state": "damaged", "reason": reader.state(KEY)[1]},
        {"key": "c" * 16, "label": "fastv@64", "state": "missing", "reason": None},
    ]


def test_a_damaged_partial_task_file_is_set_aside_and_recomputed(tmp_path):
    store, _ = _store(tmp_path)
    good = {"status": "done", "scores": {}, "rows": ROWS, "tokens": {"final": [], "layer_average": []}}
    store.put_partial(KEY, "task-shapes_count", good)
    assert store.get_partial(KEY, "task-shapes_count") == json.loads(json.dumps(good))
    store.put_partial(KEY, "task-shapes_count", {"status": "done", "scores": {}})  # no rows: a crash would follow
    store.put_partial(KEY, "costs", {"latency_ms": {}})
    assert store.get_partial(KEY, "task-shapes_count") is None and store.get_partial(KEY, "costs") is None
    reasons = [e["reason"] for e in store.damaged()]
    assert reasons == ["status done without a 'rows' list", "costs without the flops, kv_cache, tokens mapping(s)"]
    assert not store.partial_path(KEY, "costs").exists()


def test_a_damaged_plan_is_a_one_line_status_error_and_set_aside_by_the_writer(tmp_path, capsys):
    from prunebench.cli import main

    store, _ = _store(tmp_path)
    (store.root / "plan.json").write_text('[{"key": "' + KEY)
    assert main(["status", str(store.root)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "plan.json is damaged" in err
    assert store.plan() is None and not (store.root / "plan.json").exists() and "truncated JSON" in store.damaged()[0]["reason"]


def test_status_shows_a_damaged_cell_as_damaged(tmp_path):
    from prunebench.runner.cli import run_status, status_lines

    store, _ = _store(tmp_path)
    (store.root / "plan.json").write_text(json.dumps([{"key": BASE, "label": "none (unpruned)"}, {"key": KEY, "label": "random@64"}]))
    store.path(KEY).write_text('{"key": ')
    status = run_status(store.root)
    assert [c["label"] for c in status["damaged"]] == ["random@64"] and "truncated JSON" in status["damaged"][0]["error"]
    assert not status["pending"] and store.path(KEY).exists(), "status reads only"
    assert any(line.split()[0] == "damaged" and "random@64" in line for line in status_lines(store.root))
    ResultStore(store.root, repair=True, on_damage=lambda m: None).get(KEY)  # a run sets it aside ...
    assert [c["label"] for c in run_status(store.root)["damaged"]] == ["random@64"], "... and it stays damaged until recomputed"
    store.put(done(), ROWS)
    assert [c["label"] for c in run_status(store.root)["done"]] == ["none (unpruned)", "random@64"]


# -- umask ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_outputs_follow_the_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        store = ResultStore(tmp_path / "run")
        store.put(done(), ROWS)
    finally:
        os.umask(old)
    assert store.path(KEY).stat().st_mode & 0o777 == mode and store.samples_path(KEY).stat().st_mode & 0o777 == mode
    assert store.cells_dir.stat().st_mode & 0o777 == 0o777 & ~mask


# -- 13.5: one writer per run folder ----------------------------------------------------------------------------------
HOLDER = textwrap.dedent("""
    import sys, time
    from prunebench.store import ResultStore
    with ResultStore(sys.argv[1]).lock(command="holder-test " + sys.argv[2]):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def _hold(root: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(root), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_fails_at_once_naming_the_holder(tmp_path):
    root = tmp_path / "run"
    holder = _hold(root, 60)
    try:
        start = time.monotonic()
        with pytest.raises(RunLocked) as info:
            ResultStore(root).lock().acquire()
        assert time.monotonic() - start < 5
        message = str(info.value)
        assert f"pid {holder.pid}" in message and "holder-test 60" in message and "--wait" in message and "\n" not in message
    finally:
        holder.kill()
        holder.wait()
    with ResultStore(root).lock():  # SIGKILL released it
        assert json.loads((root / ".lock.json").read_text())["pid"] == os.getpid()


def test_prunebench_run_into_a_held_folder_is_a_one_line_error(tmp_path):
    root = tmp_path / "run"
    holder = _hold(root, 120)
    try:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "prunebench.cli",
                "run",
                "--model",
                "tiny-llava",
                "--tasks",
                "shapes_count",
                "--methods",
                "random",
                "--budgets",
                "8",
                "--limit",
                "1",
                "--output",
                str(root),
                "--no-progress",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
    finally:
        holder.kill()
        holder.wait()
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pid {holder.pid}" in lines[0] and "in use by another prunebench run" in lines[0]
    assert not (root / "plan.json").exists() and not (root / "cells").exists()


def test_wait_queues_behind_the_holder(tmp_path):
    root = tmp_path / "run"
    holder = _hold(root, 2)
    start = time.monotonic()
    with ResultStore(root).lock(wait=True):
        waited = time.monotonic() - start
    holder.wait()
    assert waited > 0.5 and holder.returncode == 0


def test_stale_tmp_files_go_at_once_when_the_lock_is_held(tmp_path):
    store, _ = _store(tmp_path)
    fresh = store.cells_dir / f".{KEY}.json.xyz.tmp"
    fresh.write_text("{")
    assert store.clean_stale_tmp() == [] and fresh.exists(), "without the lock a fresh one may be another writer's"
    with store.lock():
        assert not fresh.exists()


def test_a_bad_input_found_under_the_lock_leaves_no_folder_behind(tmp_path):
    root = tmp_path / "new"
    with pytest.raises(PruneBenchError):
        with ResultStore(root).lock():
            raise PruneBenchError("unknown task")
    assert not root.exists()


# -- a real sweep: damage is recomputed, nothing else ------------------------------------------------------------------
SMALL = dict(
    model="tiny-llava", tasks="shapes_count", limit=2, batch_size=2, latency={"samples": 1, "warmup": 0, "new_tokens": 1}, methods="random", budgets="64"
)


def _sweep(root, **overrides):
    pytest.importorskip("lmms_eval.evaluator")
    from prunebench.runner import Sweep, resolve_config

    return Sweep(resolve_config(None, {**SMALL, "output": str(root / "run"), **overrides}), progress=False, echo=lambda _m: None)


@pytest.fixture
def swept(tmp_path, tiny_llava):
    def rerun():
        sweep = _sweep(tmp_path)
        sweep._adapter = tiny_llava
        return sweep, sweep.run()

    sweep, result = rerun()
    assert len(result.computed) == 2
    return sweep, rerun


def test_a_damaged_cell_of_a_real_run_is_recomputed_and_nothing_else(swept):
    sweep, rerun = swept
    baseline, cell = sweep.cells
    before = sweep.store.get(cell.key)
    sweep.store.path(cell.key).write_text(json.dumps({"status": "done"}))  # trusted and never recomputed before
    _, result = rerun()
    assert result.computed == [cell.key] and result.skipped == [baseline.key]
    after = sweep.store.get(cell.key)
    assert after["status"] == "done" and after["tasks"] == before["tasks"] and after["agreement"] == before["agreement"]
    assert [e["key"] for e in sweep.store.damaged()] == [cell.key]
    assert not list((sweep.store.root / "partial").glob("*/*.json"))


def test_a_garbled_baseline_samples_file_of_a_real_run_is_repaired(swept):
    sweep, rerun = swept
    baseline, cell = sweep.cells
    agreement = sweep.store.get(cell.key)["agreement"]
    assert agreement is not None
    sweep.store.samples_path(baseline.key).write_text("garbage\n")
    sweep.baselines.samples_path(baseline.key).unlink()  # the shared copy too: nothing to restore it from
    sweep.store.path(cell.key).unlink()  # a new cell, whose agreement needs the baseline's answers
    _, result = rerun()
    assert result.computed == [baseline.key, cell.key]
    assert sweep.store.get(cell.key)["agreement"] == agreement, "agreement is not silently '-'"
    assert len(sweep.store.samples(baseline.key)) == 2 and sweep.baselines.get(baseline.key) is not None
    assert {e["key"] for e in sweep.store.damaged()} == {baseline.key} and {e["key"] for e in sweep.baselines.damaged()} == {baseline.key}


def test_a_half_written_shared_baseline_is_set_aside_and_recomputed(swept, tmp_path):
    sweep, _ = swept
    baseline = sweep.cells[0]
    path = sweep.baselines.path(baseline.key)
    path.write_text(path.read_text()[:100])
    other = _sweep(tmp_path, output=str(tmp_path / "other"))  # a later run under the same parent
    other._adapter = sweep._adapter
    result = other.run()
    assert result.computed == [c.key for c in other.cells] and not result.reused
    assert sweep.baselines.get(baseline.key)["status"] == "done"
    assert "truncated JSON" in sweep.baselines.damaged()[0]["reason"]


def test_a_damaged_partial_task_of_a_real_run_recomputes_that_task(swept, monkeypatch):
    import prunebench.runner.sweep as sweep_module

    sweep, rerun = swept
    cell = sweep.cells[1]
    sweep.store.path(cell.key).unlink()
    sweep.store.put_partial(cell.key, "costs", {"latency_ms": {}})  # a hand-damaged part: recomputed, not a KeyError
    evaluated = []
    real = sweep_module.evaluate
    monkeypatch.setattr(sweep_module, "evaluate", lambda lm, tasks, *a: (evaluated.append(tuple(tasks)), real(lm, tasks, *a))[1])
    _, result = rerun()
    assert result.computed == [cell.key] and evaluated == [("shapes_count",)]
    record = sweep.store.get(cell.key)
    assert record["status"] == "done" and record["latency_ms"]
    assert "costs without the flops" in sweep.store.damaged()[0]["reason"]


def test_report_names_missing_and_damaged_cells_instead_of_dropping_them(tmp_path, caplog):
    from prunebench.report.leaderboard import load_records

    store, _ = _store(tmp_path)
    (store.root / "plan.json").write_text(
        json.dumps([{"key": BASE, "label": "none (unpruned)"}, {"key": KEY, "label": "random@64"}, {"key": "c" * 16, "label": "fastv@64"}])
    )
    store.path(KEY).write_bytes(b"\x00\xff")
    with caplog.at_level("WARNING"):
        items = load_records(store.root)
    rows = {r["key"]: r for _, r in items}
    assert set(rows) == {BASE, KEY, "c" * 16}  # every planned cell has a row: the two without a valid record as "missing"
    assert rows[BASE]["status"] == "done" and rows[KEY]["status"] == rows["c" * 16]["status"] == "missing"
    assert "damaged" in rows[KEY]["error"] and "not UTF-8" in rows[KEY]["error"]
    text = caplog.text
    assert "cell random@64" in text and "is damaged" in text and "not UTF-8" in text and "cell fastv@64" in text and "is missing" in text
