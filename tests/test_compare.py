"""`prunebench compare`: cells matched across two run folders, what differs, the exit code; the reference copy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prunebench.cli import main
from prunebench.report import leaderboard, to_markdown
from prunebench.report.compare import cell_identity, compare_runs
from prunebench.report.example import example_records, example_samples, write_example_store
from prunebench.report.export import export_run
from prunebench.store import ResultStore

REFERENCE = Path(__file__).resolve().parent.parent / "results" / "reference" / "demo"


def _edit(store: ResultStore, method: str, budget, change) -> None:
    """Rewrite one cell's record through the store API (its per-sample log kept)."""
    record = next(r for r in store.records() if r["method"] == method and r.get("budget") == budget)
    change(record)
    store.put(record, example_samples(record) if record["status"] == "done" else None)


def test_identical_runs_are_equal(tmp_path, capsys):
    a, b = write_example_store(tmp_path / "a"), write_example_store(tmp_path / "b")
    assert main(["compare", str(a.root), str(b.root)]) == 0
    out = capsys.readouterr().out
    assert "10 cell(s) in both runs: 10 equal in accuracy" in out and out.rstrip().endswith("equal in accuracy")


def test_a_changed_score_is_named_and_fails(tmp_path, capsys):
    a, b = write_example_store(tmp_path / "a"), write_example_store(tmp_path / "b")

    def worse(record):
        record["tasks"]["shapes_color"]["score"] = 0.5
        record["relacc"] = 0.9

    _edit(b, "visionzip", 32, worse)
    assert main(["compare", str(a.root), str(b.root)]) == 1
    out = capsys.readouterr().out
    assert "VisionZip@32 (average, image) [tiny-llava, shapes, limit=20, seed=0]" in out
    assert "shapes_color 0.570 -> 0.500 (-0.070)" in out and "RelAcc % 95.0 -> 90.0" in out
    assert "shapes_count" not in out.split("VisionZip@32", 1)[1].split("\n\n", 1)[0]  # an equal task is not listed
    assert "NOT equal in accuracy" in out
    # within a score tolerance it is equal
    assert compare_runs(a.root, b.root, score_tolerance=0.1).equal_accuracy


def test_latency_costs_and_status(tmp_path, capsys):
    a, b = write_example_store(tmp_path / "a"), write_example_store(tmp_path / "b")
    _edit(b, "fastv", 32, lambda r: r.update(latency_ms={"prefill": {"median": 14.0, "p90": 15.0}}))  # 7 ms in A: x2
    _edit(b, "fastv", 16, lambda r: r.update(tokens={"final": 20, "layer_average": 16.0}))  # 16 in A
    assert main(["compare", str(a.root), str(b.root)]) == 0  # cost and latency differences do not fail
    out = capsys.readouterr().out
    assert "prefill 7.0 -> 14.0 ms (x2.00, beyond ±50%)" in out and "tokens (final) 16 -> 20" in out
    assert compare_runs(a.root, b.root, latency_tolerance=1.5).cells[1].latency == []  # within ±150 %
    _edit(b, "random", 16, lambda r: r.update(status="failed", error="RuntimeError: boom", tasks={}, relacc=None))
    result = compare_runs(a.root, b.root)
    assert not result.equal_accuracy and any("status done -> failed" in d for c in result.cells for d in c.accuracy)


def test_cells_in_one_run_only(tmp_path, capsys):
    a = write_example_store(tmp_path / "a")
    b = ResultStore(tmp_path / "b")
    for record in example_records():
        if record["method"] != "my_plugin":
            b.put(record, example_samples(record) if record["status"] == "done" else None)
    extra = dict(example_records()[1], key="f" * 16, budget=64)
    b.put(extra, example_samples(extra))
    assert main(["compare", str(a.root), str(b.root), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["only_a"] == ["my_plugin@32 (average, image) [tiny-llava, shapes, limit=20, seed=0]"]
    assert out["only_b"] == ["FastV@64 (average, image) [tiny-llava, shapes, limit=20, seed=0]"]
    assert out["equal_accuracy"] is False


def test_cells_match_on_what_defines_them_not_on_keys(tmp_path):
    records = example_records()
    renamed = [dict(r, key=f"{i:016x}") for i, r in enumerate(records)]  # another code version: other keys
    assert [cell_identity(r) for r in records] == [cell_identity(r) for r in renamed]
    a, b = ResultStore(tmp_path / "a"), ResultStore(tmp_path / "b")
    for r, s in zip(records, renamed):
        a.put(r)
        b.put(s)
    assert compare_runs(a.root, b.root).equal_accuracy
    assert cell_identity(dict(records[1], method_params={"layer": 3})) != cell_identity(records[1])


def test_not_a_run_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["compare", str(tmp_path), str(tmp_path)]) == 2
    assert "is not a run folder" in capsys.readouterr().err


def test_a_planned_cell_without_record_is_listed_as_missing(tmp_path):
    store = write_example_store(tmp_path / "run")
    record = next(r for r in store.records() if r["method"] == "visionzip" and r["budget"] == 16)
    store.path(record["key"]).unlink()
    df = leaderboard(store)
    row = df[(df["method"] == "visionzip") & (df["budget"] == 16)]
    assert list(row["status"]) == ["missing"]
    md = to_markdown(df)
    assert "| VisionZip | 16 | missing |" in md and "missing: planned, but no valid record" in md


def test_export_makes_a_reference_that_report_plot_and_compare_read(tmp_path, capsys):
    source = write_example_store(tmp_path / "run")
    (source.root / "partial" / "x").mkdir(parents=True)  # a cell in progress: not copied
    stale = dict(example_records()[1], key="e" * 16, budget=4)  # a record of an earlier plan: not copied
    source.put(stale)
    files = export_run(source.root, tmp_path / "ref")
    names = {p.relative_to(tmp_path / "ref").as_posix() for p in files}
    assert "plan.json" in names and len([n for n in names if n.startswith("cells/")]) == 10
    assert len([n for n in names if n.startswith("samples/")]) == 8  # the done cells' logs
    assert not (tmp_path / "ref" / "partial").exists() and not (tmp_path / "ref" / "cells" / ("e" * 16 + ".json")).exists()
    assert main(["report", str(tmp_path / "ref")]) == 0
    assert main(["compare", str(tmp_path / "ref"), str(source.root)]) == 0
    assert main(["plot", str(tmp_path / "ref"), "-o", str(tmp_path / "figs"), "--formats", "png", "--dpi", "60"]) == 0
    assert (tmp_path / "figs" / "budget_curves.png").exists()


@pytest.mark.skipif(not (REFERENCE / "cells").is_dir(), reason="results/reference/demo not yet regenerated as a run folder (nox -s reference)")
def test_committed_reference_is_a_run_folder(tmp_path, capsys):
    plan = json.loads((REFERENCE / "plan.json").read_text())
    assert all((REFERENCE / "cells" / f"{c['key']}.json").is_file() for c in plan)
    assert any((REFERENCE / "samples").glob("*.jsonl"))
    df = leaderboard(REFERENCE)
    assert (df["status"] == "done").all() and len(df) == len(plan)
    assert main(["compare", str(REFERENCE), str(REFERENCE)]) == 0
