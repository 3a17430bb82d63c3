"""Leaderboard tables (Markdown, CSV, LaTeX), run combination and published numbers, from a synthetic store."""

from __future__ import annotations

import io
import re
import shutil
import subprocess

import pandas as pd
import pytest

from prunebench.cli import main
from prunebench.report import leaderboard, ranks, to_csv, to_latex, to_markdown
from prunebench.report.example import example_records, write_example_store
from prunebench.report.latex import escape
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
    """Every body row has as many cells as the column spec; braces balance; no unescaped underscore."""
    ncols = len(re.search(r"\\begin\{tabular\}\{([lrc]+)\}", tex).group(1))
    for line in tex.splitlines():
        if line.endswith(r"\\") and not line.startswith(r"\multicolumn"):
            span = sum(int(n) - 1 for n in re.findall(r"\\multicolumn\{(\d+)\}", line))
            assert line.count(" & ") + 1 + span == ncols, line
    assert tex.count("{") == tex.count("}")
    assert not re.search(r"(?<!\\)_", tex.split("\n", 1)[1].replace(r"\label{tab:leaderboard}", ""))


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
    df = leaderboard(run, with_published=True, published_source="VisPruner (arXiv 2412.01818v2+) Table 1")
    (tmp_path / "t.tex").write_text(to_latex(df, standalone=True))
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (tmp_path / "t.pdf").stat().st_size > 1000


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
    assert r"\textit{Published: DART (arXiv 2502.11494, EMNLP version) Table 1, 192 tokens (llava-1.5-7b)}" in tex
    assert r"\textit{Published: DART (arXiv 2502.11494, EMNLP version) Table 1, unpruned (576 tokens) (llava-1.5-7b)}" in tex


def test_published_filters_and_errors(run, capsys):
    rows = published_rows("llava-next-7b", source="VisionZip")
    assert set(rows["source"]) == {"published: VisionZip (arXiv 2412.04467v1) Table 2"}
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


def test_published_averages_recompute_from_the_transcribed_scores():
    """RelAcc = mean of method / vanilla over the table's benchmarks: a transcription slip shows up here."""
    t = published_table()
    t = t[~t["benchmark"].str.contains(" acc| score", regex=True) & ~t["paper"].str.startswith("TOPS")]
    checked = 0
    for (paper, table, model), g in t.groupby(["paper", "table", "model"]):
        vanilla = g[g["method_key"] == "none"].set_index("benchmark")["value"]
        if vanilla.empty:
            continue
        for (method, budget, setting), r in g[g["method_key"] != "none"].groupby(["method", "budget", "setting"], dropna=False):
            values = r.set_index("benchmark")["value"]
            benches = [b for b in values.index if b in vanilla.index and b not in ("RelAcc", "Acc")]
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
    assert printed.startswith(r"\documentclass") and printed.rstrip().endswith(r"\end{document}")
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
