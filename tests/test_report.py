"""Leaderboard tables (Markdown, CSV, LaTeX), run combination and published numbers, from a synthetic store."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from prunebench.cli import main
from prunebench.registry import get_method_class, list_methods
from prunebench.report import leaderboard, published, ranks, to_csv, to_latex, to_markdown
from prunebench.report.example import example_records, write_example_store
from prunebench.report.latex import bibtex, cited_keys, escape
from prunebench.report.published import published_rows, published_table
from prunebench.store import ResultStore


@pytest.fixture()
def run(tmp_path):
    return write_example_store(tmp_path / "run_a")


def md_row(markdown: str, method: str, budget: str) -> list[str]:
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == method and cells[1] == budget:
            return cells
    raise AssertionError(f"no row {method} @ {budget} in\n{markdown}")


def md_header(markdown: str) -> list[str]:
    return [c.strip() for c in markdown.splitlines()[0].strip().strip("|").split("|")]


def latex_row(tex: str, method_prefix: str, budget: str) -> str:
    for line in tex.splitlines():
        cells = line.split(" & ")
        if len(cells) > 2 and cells[0].startswith(method_prefix) and cells[1] == budget:
            return line
    raise AssertionError(f"no LaTeX row {method_prefix} @ {budget}")


# ---------------------------------------------------------------------------------------------------------
# leaderboard contents


def test_rows_cover_baseline_methods_budgets_and_failures(run):
    df = leaderboard(run)
    assert len(df) == 10  # every cell, failed and infeasible included
    assert df.iloc[0]["method"] == "none"  # the unpruned baseline leads
    assert list(df["budget"].dropna().astype(int)) == [32, 32, 32, 32, 16, 16, 16, 8, 8]
    assert set(df["status"]) == {"done", "failed", "infeasible"}
    assert df.attrs["tasks"] == ["shapes_count", "shapes_color"]


def test_markdown_values(run):
    md = to_markdown(leaderboard(run))
    header = md_header(md)
    row = md_row(md, "VisionZip", "32")
    assert row[header.index("RelAcc (%)")] == "95.0"
    assert row[header.index("Agree. (%)")] == "90.0"
    assert row[header.index("shapes_count")] == "0.760"
    assert row[header.index("Prefill (ms)")] == "6.0"
    assert row[header.index("KV (MB)")] == "2.00"
    base = md_row(md, "Unpruned", "all (64)")
    assert base[header.index("RelAcc (%)")] == "100.0"
    infeasible = md_row(md, "FastV", "8")
    assert infeasible[header.index("Status")] == "infeasible"
    assert infeasible[header.index("RelAcc (%)")] == "infeasible"
    failed = md_row(md, "VisionZip", "8")
    assert failed[header.index("Status")].startswith("failed: RuntimeError: CUDA out of memory")


def test_relacc_is_computed_when_the_record_lacks_it(tmp_path):
    store = ResultStore(tmp_path / "r")
    for record in example_records():
        for entry in record["tasks"].values():
            entry.pop("baseline")  # falls back to the baseline row of the run
        record["relacc"] = None
        store.put(record)
    df = leaderboard(store)
    row = df[(df["method"] == "fastv") & (df["budget"] == 16)].iloc[0]
    assert row["relacc"] == pytest.approx(100 * (0.64 / 0.80 + 0.48 / 0.60) / 2)


def test_tflops_fall_back_to_analytic_and_csv_round_trips(run):
    df = leaderboard(run)
    rnd = df[(df["method"] == "random") & (df["budget"] == 32)].iloc[0]
    assert rnd["tflops"] == pytest.approx(0.5 + 32 / 64) and rnd["tflops_source"] == "analytic"
    back = pd.read_csv(io.StringIO(to_csv(df)))
    assert len(back) == 10
    vz = back[(back["method"] == "visionzip") & (back["budget"] == 32)].iloc[0]
    assert vz["relacc"] == pytest.approx(95.0) and vz["kv_mb"] == pytest.approx(2.0)
    assert back[back["status"] == "failed"]["error"].str.contains("out of memory").all()


def test_ranks_per_budget_group(run):
    df = leaderboard(run)
    rank = ranks(df)
    at32 = df.index[(df["budget"] == 32)]
    best_relacc = df.loc[at32][rank.loc[at32, "relacc"] == 1]["method"].tolist()
    second_relacc = df.loc[at32][rank.loc[at32, "relacc"] == 2]["method"].tolist()
    assert best_relacc == ["visionzip"] and second_relacc == ["my_plugin"]
    best_prefill = df.loc[at32][rank.loc[at32, "prefill_ms"] == 1]["method"].tolist()
    assert best_prefill == ["random"]  # lower is better for cost
    assert (rank.loc[df["method"] == "none"] == 0).all().all()  # the baseline is a reference, never ranked


# ---------------------------------------------------------------------------------------------------------
# LaTeX


def check_tabular(tex: str) -> None:
    """Per table: every body row has as many cells as the column spec; braces balance; no unescaped _ % # in the
    rows and captions (an unescaped % comments out the rest of a row, # is a macro parameter)."""
    tables = tex.split(r"\begin{table*}")[1:]
    assert tables, "no table"
    for table in tables:
        ncols = len(re.search(r"\\begin\{tabular\}\{([lrc]+)\}", table).group(1))
        for line in table.splitlines():
            if line.endswith(r"\\") and not line.startswith(r"\multicolumn"):
                span = sum(int(n) - 1 for n in re.findall(r"\\multicolumn\{(\d+)\}", line))
                assert line.count(" & ") + 1 + span == ncols, line
            if line.endswith(r"\\") or line.startswith((r"\caption", r"\par")):
                assert not re.search(r"(?<!\\)[%#_]", line), line
        assert table.count("{") == table.count("}")


def test_latex_structure_bold_underline_escaping_citations(run):
    tex = to_latex(leaderboard(run))
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}", r"\end{tabular}"):
        assert rule in tex
    assert tex.index(r"\toprule") < tex.index(r"\midrule") < tex.index(r"\bottomrule")
    vz = latex_row(tex, "VisionZip", "32")
    assert r"\citep{yang2025visionzip}" in vz
    assert r"\textbf{95.0}" in vz  # best RelAcc at 32
    assert r"\underline{91.3}" in latex_row(tex, r"my\_plugin", "32")  # second best RelAcc
    assert r"\textbf{5.9}" in latex_row(tex, "Random", "32")  # lowest prefill latency is best
    assert r"\citep" not in latex_row(tex, r"my\_plugin", "32")  # unknown plugin: no citation
    assert r"\citep{chen2024fastv}" in latex_row(tex, "FastV", "16")
    assert r"shapes\_count" in tex and "shapes_count" not in tex
    assert r"\textbf" not in latex_row(tex, "Unpruned", "all (64)")
    assert r"\multicolumn{7}{c}{\textit{infeasible}}" in latex_row(tex, "FastV", "8")
    assert r"\multicolumn{7}{c}{\textit{failed}}" in latex_row(tex, "VisionZip", "8")
    check_tabular(tex)


def test_escape():
    assert escape("a_b & 50% #1 $x$ {y} ~^\\") == r"a\_b \& 50\% \#1 \$x\$ \{y\} \textasciitilde{}\textasciicircum{}\textbackslash{}"
    assert escape("VisionZip‡") == r"VisionZip\textsuperscript{\ddag}"


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no pdflatex on this machine (structure is checked above)")
def test_latex_compiles(run, tmp_path):
    """Every published table of the model beside the measured one: pdflatex (and bibtex, when installed) run clean."""
    df = leaderboard(run, with_published=True)
    (tmp_path / "t.tex").write_text(to_latex(df, standalone=True))

    def pdflatex():
        proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout[-3000:]
        return proc.stdout

    pdflatex()
    assert (tmp_path / "t.pdf").stat().st_size > 1000
    if shutil.which("bibtex"):
        proc = subprocess.run(["bibtex", "t"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout[-2000:]
        pdflatex()
        log = pdflatex()
        assert "undefined" not in log.replace("\n", ""), "a citation key has no BibTeX entry"


# ---------------------------------------------------------------------------------------------------------
# several runs


def test_two_runs_keep_their_labels(tmp_path):
    a = write_example_store(tmp_path / "reference")
    b = write_example_store(tmp_path / "mine", scale=0.9)
    df = leaderboard([a, b])
    assert len(df) == 20
    labels = set(df.loc[(df["method"] == "fastv") & (df["budget"] == 32), "label"])
    assert labels == {"FastV [reference]", "FastV [mine]"}
    md = to_markdown(df)
    assert "Run" in md_header(md)
    row = md_row(md, "FastV [mine]", "32")
    assert row[md_header(md).index("RelAcc (%)")] == "81.0"  # 0.9 x 90 %
    # both runs compete in one budget group: the best RelAcc at 32 is the reference run's VisionZip
    rank = ranks(df)
    best = df[(df["budget"] == 32) & (rank["relacc"] == 1)]
    assert best["label"].tolist() == ["VisionZip [reference]"]


def test_missing_run_folder_names_the_fix(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "no results store" in err and "prunebench run" in err


# ---------------------------------------------------------------------------------------------------------
# published numbers


def test_published_rows_beside_measured(run):
    df = leaderboard(run, with_published=True)
    pub = df[df["source"].str.startswith("published: ")]
    assert len(pub) > 50 and (df["source"] == "measured").sum() == 10
    vp = pub[(pub["source"] == "published: VisPruner (arXiv 2412.01818v2+) Table 1") & (pub["method"] == "vispruner")]
    assert vp.set_index("budget")["relacc"].to_dict() == {128: 99.6, 64: 96.6, 32: 91.5}
    vanilla = pub[(pub["source"] == "published: VisPruner (arXiv 2412.01818v2+) Table 1") & (pub["method"] == "none")].iloc[0]
    assert vanilla["MME (perception)"] == 1510.7 and vanilla["budget"] == 576
    assert (ranks(df).loc[pub.index] == 0).all().all()  # published rows are quoted, never ranked
    md = to_markdown(df)
    assert "published: VisionZip (arXiv 2412.04467v1) Table 1" in md
    tex = to_latex(df)
    check_tabular(tex)
    assert r"\textsuperscript{\ddag}" in tex  # VisionZip‡
    assert r"\textit{Published: DART (arXiv 2502.11494, EMNLP version) Table 1, 192 tokens}" in tex
    assert r"\textit{Published: DART (arXiv 2502.11494, EMNLP version) Table 1, unpruned (576 tokens)}" in tex


def test_published_filters_and_errors(run, capsys):
    rows = published_rows("llava-next-7b", source="VisionZip")
    assert set(rows["source"]) == {"published: VisionZip (arXiv 2412.04467v1) Table 2", "published: VisionZip (arXiv 2412.04467v1) appendix (LLaVA-NeXT-7B)"}
    assert set(published_rows("llava-next-7b", source="VisionZip (arXiv 2412.04467v1) Table 2")["source"]) == {
        "published: VisionZip (arXiv 2412.04467v1) Table 2"
    }
    assert main(["report", str(run.root), "--with-published", "--published-model", "gpt-9"]) == 2
    assert "--published-model" in capsys.readouterr().err


def test_published_data_is_sourced_and_conventions_are_separate():
    t = published_table()
    for col in ("paper", "table", "model", "benchmark", "method", "metric", "evidence"):
        assert (t[col].astype(str).str.len() > 0).all(), col
    assert not t.duplicated(["paper", "table", "model", "benchmark", "method", "budget", "setting"]).any()
    mme = t[t["benchmark"].str.startswith("MME")]
    assert set(mme.loc[mme["paper"].str.startswith("VisionZip"), "benchmark"]) == {"MME (total)"}
    assert set(mme.loc[mme["paper"].str.startswith("VisPruner"), "benchmark"]) == {"MME (perception)"}

    def value(paper, table, method, budget, bench):
        sel = t[t["paper"].str.startswith(paper) & (t["table"] == table) & (t["method"] == method) & (t["budget"] == budget) & (t["benchmark"] == bench)]
        assert len(sel) == 1, (paper, table, method, budget, bench)
        return sel.iloc[0]

    assert value("DART", "Table 1", "DART", 192, "GQA")["value"] == 60.0
    assert value("VisionZip", "Table 1", "VisionZip‡", 64, "MME (total)")["value"] == 1756
    assert value("FasterVLM", "H1 (LLaVA-1.5-7B)", "FasterVLM", 58, "MME (perception)")["value"] == 1348.63
    fix = value("SparseVLM", "Table 1", "FastV", 64, "SQA-IMG")
    assert fix["value"] == 51.1 and "55.1" in fix["note"]  # the page's misprint, corrected as the reference says
    assert value("HiPrune", "Table 2", "HiPrune", 64, "RelAcc")["value"] == 92.7


# Averages that the papers themselves print inconsistently (checked against the reference notes).
INCONSISTENT_AVERAGES = {("VisionZip (arXiv 2412.04467v1)", "Table 1", "FastV", 128)}
# Tables whose average leaves benchmarks out, as the papers' own table notes say (VisionZip §4.6, Table notes).
EXCLUDED_FROM_AVERAGE = {("VisionZip (arXiv 2412.04467v1)", "LLaVA-1.5-13B table"): {"MM-Vet", "LLaVA-Bench"}}


def test_published_averages_recompute_from_the_transcribed_scores():
    """RelAcc = mean of method / vanilla over the table's benchmarks: a transcription slip shows up here."""
    t = published_table()
    t = t[~t["benchmark"].str.contains(" acc| score", regex=True) & ~t["paper"].str.startswith("TOPS")]
    checked = 0
    for (paper, table, _model), g in t.groupby(["paper", "table", "model"]):
        vanilla = g[g["method_key"] == "none"].set_index("benchmark")["value"]
        if vanilla.empty:
            continue
        for (method, budget, _setting), r in g[g["method_key"] != "none"].groupby(["method", "budget", "setting"], dropna=False):
            values = r.set_index("benchmark")["value"]
            excluded = {"RelAcc", "Acc"} | EXCLUDED_FROM_AVERAGE.get((paper, table), set())
            benches = [b for b in values.index if b in vanilla.index and b not in excluded]
            if "RelAcc" not in values or len(benches) < 4 or (paper, table, method, budget) in INCONSISTENT_AVERAGES:
                continue
            recomputed = 100 * sum(values[b] / vanilla[b] for b in benches) / len(benches)
            assert recomputed == pytest.approx(values["RelAcc"], abs=0.35), (paper, table, method, budget)
            checked += 1
    assert checked > 120


# ---------------------------------------------------------------------------------------------------------
# command line


def test_report_command_writes_every_format(run, tmp_path, capsys):
    out = tmp_path / "out" / "leaderboard"
    assert main(["report", str(run.root), "--format", "md,csv,latex", "-o", str(out)]) == 0
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    assert md_row(md, "FastV", "16")[md_header(md).index("RelAcc (%)")] == "80.0"
    assert len(pd.read_csv(tmp_path / "out" / "leaderboard.csv")) == 10
    assert r"\bottomrule" in (tmp_path / "out" / "leaderboard.tex").read_text()
    assert main(["report", str(run.root), "--format", "latex", "--standalone"]) == 0
    printed = capsys.readouterr().out
    assert r"\documentclass" in printed and printed.rstrip().endswith(r"\end{document}")
    # the cited entries travel with the document, so bibtex resolves every \citep
    assert printed.index(r"\begin{filecontents*}") < printed.index(r"\documentclass")
    assert "@misc{chen2024fastv," in printed and r"\bibliography{prunebench-references}" in printed
    assert main(["report", str(run.root), "--format", "html"]) == 2
    assert "md, csv, latex" in capsys.readouterr().err


def test_collisions_inside_one_run_name_params_and_budget_mode(tmp_path):
    store = ResultStore(tmp_path / "r")
    records = [r for r in example_records() if r["method"] in ("none", "visionzip") and r["status"] == "done"]
    for record in records:
        store.put(record)
    for record in records[1:]:  # the same cells again with another parameter, and in the other budget mode
        store.put(dict(record, key=record["key"] + "p", method_params={"dominant": 54}, relacc=0.5))
        store.put(dict(record, key=record["key"] + "m", budget_mode="final", relacc=0.4))
    df = leaderboard(store)
    labels = set(df.loc[df["budget"] == 32, "label"])
    assert labels == {"VisionZip (average) (dominant=default)", "VisionZip (average) (dominant=54)", "VisionZip (final)"}
    rank = ranks(df)
    # the two budget modes are ranked apart: the 'final' cell is alone in its group, so it is not bold
    assert rank.loc[(df["budget_mode"] == "final"), "relacc"].eq(0).all()
    tex = to_latex(df)
    assert "32 visual tokens (budget mode: final)" in tex


def test_published_model_from_hub_id(tmp_path):
    store = ResultStore(tmp_path / "r")
    for record in example_records(model="llava-hf/llava-v1.6-vicuna-7b-hf"):
        store.put(record)
    df = leaderboard(store, with_published=True)
    assert set(df.loc[df["source"] != "measured", "model"]) == {"llava-next-7b"}


def test_relacc_above_two_is_still_a_ratio(tmp_path):
    store = ResultStore(tmp_path / "r")
    for record in example_records():
        if record["method"] == "fastv" and record["budget"] == 32:
            record["relacc"] = 2.5  # e.g. 0.25 where the unpruned model scored 0.1
        store.put(record)
    df = leaderboard(store)
    assert df.loc[(df["method"] == "fastv") & (df["budget"] == 32), "relacc"].item() == pytest.approx(250.0)


# ---------------------------------------------------------------------------------------------------------
# plan.json, display precision, cost kinds


def test_leaderboard_reads_the_cells_of_the_plan(tmp_path, capsys):
    """A folder reused for another sweep keeps old records in cells/: by default only plan.json's cells count."""
    store = write_example_store(tmp_path / "r")
    records = list(store.records())
    stale = dict(next(r for r in records if r["method"] == "fastv" and r["budget"] == 32), key="0ld", limit=5, relacc=0.5)
    store.put(stale)
    (tmp_path / "r" / "plan.json").write_text(json.dumps([{"key": r["key"]} for r in records]))
    df = leaderboard(store)
    assert len(df) == 10 and set(df["limit"]) == {"20"}
    everything = leaderboard(store, all_cells=True)
    assert len(everything) == 11
    # the two FastV series differ only by their limit: the labels say so, at every budget of each series
    fastv = everything[everything["method"] == "fastv"].set_index(["limit", "budget"])["label"]
    assert fastv.loc[("5", 32)] == "FastV (limit=5)"
    assert set(fastv.loc["20"]) == {"FastV (limit=20)"}
    assert main(["report", str(store.root), "--all", "--format", "csv"]) == 0
    assert len(pd.read_csv(io.StringIO(capsys.readouterr().out))) == 11


def test_ties_are_ranked_at_the_printed_precision(tmp_path):
    """95.04 and 94.96 both print 95.0: both are best (bold), the next value is second."""
    store = ResultStore(tmp_path / "r")
    for record in example_records():
        if record["budget"] == 32 and record["method"] == "fastv":
            record["relacc"] = 0.9504
        if record["budget"] == 32 and record["method"] == "visionzip":
            record["relacc"] = 0.9496
        store.put(record)
    df = leaderboard(store)
    rank = ranks(df)
    at32 = df["budget"] == 32
    best = set(df.loc[at32 & (rank["relacc"] == 1), "method"])
    assert best == {"fastv", "visionzip"}
    assert set(df.loc[at32 & (rank["relacc"] == 2), "method"]) == {"my_plugin"}  # 91.3
    tex = to_latex(df)
    assert r"\textbf{95.0}" in latex_row(tex, "FastV", "32") and r"\textbf{95.0}" in latex_row(tex, "VisionZip", "32")


def test_analytic_tflops_are_marked_and_ranked_apart(run):
    df = leaderboard(run)
    md = to_markdown(df)
    header = md_header(md)
    assert md_row(md, "Random", "32")[header.index("TFLOPs")] == "1.00†"
    assert md_row(md, "VisionZip", "32")[header.index("TFLOPs")] == "0.80"
    assert "† TFLOPs computed analytically" in md
    rank = ranks(df)
    at32 = df["budget"] == 32
    # measured 0.80 (VisionZip) < 1.00 (my_plugin) < 1.20 (FastV); Random's analytic 1.00 is not a contender
    assert set(df.loc[at32 & (rank["tflops"] == 2), "method"]) == {"my_plugin"}
    assert rank.loc[at32 & (df["method"] == "random"), "tflops"].item() == 0
    tex = to_latex(df)
    assert r"1.00\textsuperscript{\dag}" in latex_row(tex, "Random", "32")
    assert r"\underline{1.00}" in latex_row(tex, r"my\_plugin", "32")


def test_time_to_first_token_is_preferred(tmp_path):
    store = ResultStore(tmp_path / "r")
    for record in example_records():
        if record["status"] == "done" and record["method"] != "random":  # random keeps only its prefill time
            prefill = record["latency_ms"]["prefill"]["median"]
            record["latency_ms"]["ttft"] = {"median": prefill + 3.0, "p90": prefill + 4.0}
        store.put(record)
    df = leaderboard(store)
    md = to_markdown(df)
    header = md_header(md)
    assert "TTFT (ms)" in header and "Prefill (ms)" not in header
    assert md_row(md, "VisionZip", "32")[header.index("TTFT (ms)")] == "9.0"  # 6.0 + 3.0
    assert md_row(md, "Random", "32")[header.index("TTFT (ms)")] == "5.9*"
    rank = ranks(df)
    at32 = df["budget"] == 32
    # among the TTFTs at 32: VisionZip 9.0 best, FastV 10.0 second; Random's prefill 5.9 is not compared with them
    assert set(df.loc[at32 & (rank["prefill_ms"] == 1), "method"]) == {"visionzip"}
    assert rank.loc[at32 & (df["method"] == "random"), "prefill_ms"].item() == 0
    assert r"TTFT (ms) $\downarrow$" in to_latex(df)


# ---------------------------------------------------------------------------------------------------------
# published numbers: verbatim, mapped onto lmms-eval tasks, one LaTeX table per source, citations


def test_published_cells_print_verbatim(run):
    df = leaderboard(run, with_published=True, published_source="FasterVLM (arXiv 2412.01818v1) H1")
    md = to_markdown(df)
    header = md_header(md)
    vanilla = next(line for line in md.splitlines() if line.startswith("| vanilla | 576 |"))
    cells = [c.strip() for c in vanilla.strip().strip("|").split("|")]
    assert cells[header.index("MM-Vet")] == "31.30" and cells[header.index("MME (perception)")] == "1506.47"
    fastv = next(line for line in md.splitlines() if line.startswith("| FastV | 432 |") and "published" in line)
    assert [c.strip() for c in fastv.strip().strip("|").split("|")][header.index("MME (perception)")] == "1528.16"
    # measured columns keep their own precision
    assert md_row(md, "VisionZip", "32")[header.index("RelAcc (%)")] == "95.0"


def test_published_benchmarks_sit_in_the_matching_lmms_eval_columns(tmp_path):
    store = ResultStore(tmp_path / "r")
    for record in example_records(model="llava-hf/llava-1.5-7b-hf"):
        record["task_names"] = ["gqa", "mme"]
        if record["status"] == "done":
            record["tasks"] = {
                "gqa": {"metric": "exact_match", "score": 0.61, "baseline": 0.62, "n": 20},
                "mme": {"metric": "mme_perception_score", "score": 1500.0, "baseline": 1510.0, "n": 20},
            }
        store.put(record)
    df = leaderboard(store, with_published=True, published_source="FastV (arXiv 2403.06764) README (lmms-eval)")
    pub = df[df["source"] != "measured"].set_index("label")
    # README: GQA 62.0 -> 60.4 (percent) and MME-P 1510.8 -> 1511.7 (sum of subtask scores, as lmms-eval's mme)
    assert pub.loc["vanilla", "gqa"] == pytest.approx(0.620) and pub.loc["vanilla", "mme"] == pytest.approx(1510.8)
    assert pub.loc["FastV (K=3, R=50 %)", "gqa"] == pytest.approx(0.604)
    assert "GQA" not in df.columns and "MME (perception)" not in df.columns
    assert "MME (cognition)" in df.columns  # no lmms-eval column measures it here
    md = to_markdown(df)
    row = next(line for line in md.splitlines() if line.startswith("| vanilla |"))
    cells = [c.strip() for c in row.strip().strip("|").split("|")]
    assert cells[md_header(md).index("gqa")] == "0.620"  # the paper's digits, on the task's 0-1 scale


def test_latex_gives_each_published_source_its_own_table(run):
    df = leaderboard(run, with_published=True)
    sources = df.loc[df["source"] != "measured", "source"].unique()
    tex = to_latex(df)
    tables = tex.split(r"\begin{table*}")[1:]
    assert len(tables) == 1 + len(sources) > 5
    check_tabular(tex)
    dart = next(t for t in tables if "DART (arXiv 2502.11494, EMNLP version) Table 1" in t)
    header = next(line for line in dart.splitlines() if line.startswith("Method & Budget"))
    assert "OCRBench" in header and "shapes" not in header and "Agree" not in header  # only the columns it fills
    assert r"\citep{wen2025dart}" in dart.split(r"\label")[0]  # the caption cites the source
    assert len({re.search(r"\\label\{([^}]+)\}", t).group(1) for t in tables}) == len(tables)
    one = to_latex(leaderboard(run, with_published=True, published_source="VisPruner (arXiv 2412.01818v2+) Table 1"))
    assert one.count(r"\begin{table*}") == 1  # one source: beside the measured rows in one table


def test_caption_as_latex(run, capsys):
    tex = to_latex(leaderboard(run), caption_latex=r"Budgets $B \in \{16, 32\}$~\citep{x}.")
    assert r"\caption{Budgets $B \in \{16, 32\}$~\citep{x}.}" in tex
    assert r"\caption{50\% of tokens}" in to_latex(leaderboard(run), caption="50% of tokens")


def test_bibtex_has_every_cited_key(run, tmp_path):
    df = leaderboard(run, with_published=True)
    keys = cited_keys(df)
    assert {"chen2024fastv", "yang2025visionzip", "wen2025dart", "bolya2023tome", "shang2024prumerge"} <= set(keys)
    text = bibtex(keys)
    assert "no entry shipped" not in text
    assert all(f"{{{k}," in text for k in keys)
    registry = {getattr(get_method_class(m), "citation", "") for m in list_methods()} - {""}
    assert "no entry shipped" not in bibtex(sorted(registry))
    assert "no entry shipped for: nobody2099" in bibtex(["nobody2099"])
    out = tmp_path / "refs.bib"
    assert main(["report", str(run.root), "--format", "latex", "--with-published", "--bib", str(out), "-o", str(tmp_path / "t.tex")]) == 0
    assert "@misc{wen2025dart," in out.read_text()


REFERENCE = Path(os.environ.get("PRUNEBENCH_REFERENCE", "/work/shared/reference"))


@pytest.mark.skipif(not (REFERENCE / "methods-1.md").exists(), reason="the reference transcriptions are not on this machine")
def test_shipped_csv_is_the_builders_output():
    """published.csv changes only through data/build_published.py (which also checks every value against the text)."""
    spec = importlib.util.spec_from_file_location("build_published", Path(published.__file__).parent / "data" / "build_published.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    out = io.StringIO()
    builder.write_csv(builder.build(REFERENCE), out)
    shipped = (Path(published.__file__).parent / "data" / "published.csv").read_text(encoding="utf-8")
    assert out.getvalue() == shipped


# ---------------------------------------------------------------------------------------------------------
# legend, units, precision, latency reliability, random weights


def _records_with(tmp_path, **changes):
    """The example records with ``changes`` applied to every done cell (a key -> value or a callable)."""
    records = example_records(model="toy-llava")
    for r in records:
        if r["status"] == "done":
            for key, value in changes.items():
                r[key] = value(r) if callable(value) else value
    store = ResultStore(tmp_path / "run")
    for r in records:
        store.put(r)
    return store


def test_every_table_carries_a_legend(run):
    df = leaderboard(run)
    md = to_markdown(df)
    legend = md.split("Legend:", 1)[1]
    for term in ("RelAcc: mean over tasks of score / unpruned score, in %", "Agree.:", "Prefill:", "TFLOPs:", "KV:", "Budget:"):
        assert term in legend, term
    tex = to_latex(df)
    caption = tex.split("\\caption{", 1)[1].split("\\label", 1)[0]
    assert "RelAcc: mean over tasks" in caption and "\\textbf{bold}" in caption and "\\underline{underlined}" in caption
    assert "KV: key/value cache" in caption and "$2^{20}$" in caption


def test_cost_units_follow_the_table(tmp_path):
    # toy-sized costs: 0.00057 TFLOPs print as 0.570 GFLOPs, in a column titled by that unit; KV stays in MB
    store = _records_with(tmp_path, flops=lambda r: {"measured_tflops": 0.00057}, kv_cache=lambda r: {"measured_mb": 0.3})
    md = to_markdown(leaderboard(store))
    header = md_header(md)
    assert "GFLOPs" in header and "TFLOPs" not in header and "KV (MB)" in header
    row = md_row(md, "FastV", "32")
    assert row[header.index("GFLOPs")] == "0.570" and row[header.index("KV (MB)")] == "0.300"
    assert "GFLOPs: floating-point operations" in md
    assert "0.00057" not in md
    # large costs stay in TFLOPs, KV in GB
    store = _records_with(tmp_path / "big", flops=lambda r: {"measured_tflops": 3.2}, kv_cache=lambda r: {"measured_mb": 2048.0})
    header = md_header(to_markdown(leaderboard(store)))
    assert "TFLOPs" in header and "KV (GB)" in header
    # the CSV keeps the raw units (TFLOPs, MB)
    assert leaderboard(store)["tflops"].dropna().max() == pytest.approx(3.2)


def test_task_scores_print_at_one_precision(tmp_path):
    records = example_records(model="toy-llava")
    for r in records:  # one task at a perfect 1.0 used to print with 2 decimals, the other with 3
        if r["status"] == "done":
            r["tasks"]["shapes_count"]["score"] = 1.0 if r["method"] == "none" else 0.95
            r["tasks"]["shapes_count"]["baseline"] = 1.0
    store = ResultStore(tmp_path / "run")
    for r in records:
        store.put(r)
    md = to_markdown(leaderboard(store))
    header = md_header(md)
    base, fastv = md_row(md, "Unpruned", "all (64)"), md_row(md, "FastV", "32")
    assert base[header.index("shapes_count")] == "1.000" and fastv[header.index("shapes_count")] == "0.950"
    assert fastv[header.index("shapes_color")] == "0.540"


def test_unreliable_latency_is_flagged_and_explained(tmp_path):
    # spread: p90 twice the median
    store = _records_with(tmp_path / "spread", latency_ms=lambda r: {"ttft": {"median": 10.0, "p90": 20.0, "n": 8}})
    df = leaderboard(store)
    assert set(df.loc[(df["status"] == "done") & (df["method"] != "none"), "latency_flag"]) == {"p90/median 2.0"}
    md = to_markdown(df)
    header = md_header(md)
    assert md_row(md, "FastV", "32")[header.index("TTFT (ms)")] == "10.0§"
    assert "§ unreliable latency" in md and "p90/median above 1.5" in md
    assert "\\textsuperscript{\\S}" in to_latex(df)
    # load: 8 on 2 cores (read from latency.load_average / latency.cpu_count), with a quiet spread
    store = _records_with(
        tmp_path / "load",
        latency_ms=lambda r: {"ttft": {"median": 10.0, "p90": 11.0, "n": 8}},
        latency=lambda r: {"samples": 8, "load_average": [8.0, 6.0, 4.0], "cpu_count": 2},
    )
    df = leaderboard(store)
    assert set(df.loc[(df["status"] == "done") & (df["method"] != "none"), "latency_flag"]) == {"load 4.0/core"}
    # quiet: no flag, no footnote
    store = _records_with(
        tmp_path / "quiet", latency_ms=lambda r: {"ttft": {"median": 10.0, "p90": 11.0, "n": 8}}, latency=lambda r: {"load_average": 0.5, "cpu_count": 2}
    )
    md = to_markdown(leaderboard(store))
    assert "§" not in md


def test_random_weights_are_named_in_the_tables(run, tmp_path):
    df = leaderboard(run)  # the example store is tiny-llava
    assert "tiny-llava: random weights: scores are meaningless, for tests" in to_markdown(df)
    assert "random weights" in to_latex(df).split("\\label", 1)[0]
    real = leaderboard(write_example_store(tmp_path / "real", model="toy-llava"))
    assert "random weights" not in to_markdown(real) and "random weights" not in to_latex(real)
