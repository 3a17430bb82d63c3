"""Regenerate ``published.csv`` from the project's reference transcriptions (provenance of the shipped data).

    python prunebench/report/data/build_published.py /work/shared/reference > prunebench/report/data/published.csv

Markdown tables and the regular bullet lists are parsed mechanically (no hand copying); the results given in
prose are listed literally below, each with the section it comes from. Every value is kept as the text the
source prints ("31.30" stays "31.30", "1528.16" stays "1528.16"), and every value must occur as a number in the
reference text (checked when building, so a typo in a literal list stops the build). Cells printed as "–" are
omitted. Columns of the CSV:

    paper, table, model, benchmark, method, method_key, budget, setting, value, metric, evidence, note

``benchmark`` "RelAcc" is a paper's relative accuracy in percent (mean over its benchmarks of method / vanilla);
"Acc" is a mean of raw scores (VisPruner: with MME/20; the metric column says which). MME is split by convention
into "MME (total)" (perception + cognition), "MME (perception)" and "MME (cognition)" so they are never mixed in
one column. Cost numbers use the benchmarks "TFLOPs", "KV (MB)", "Latency (ms)" / "Latency (s)" (the report's
cost columns) and a few others ("FLOPs/layer (B)", "GPU mem (GB)", speed-up ratios); their ``metric`` states
each paper's own convention (what is counted, hardware, timing scope), which is never the harness's own.
``method_key`` is the prunebench registry name (``none`` for the unpruned model, ``random`` for FastV at K = 0)
so colours and rows line up with measured runs.
"""

from __future__ import annotations

import csv
import re
import sys
from collections import Counter
from pathlib import Path

FIELDS = ["paper", "table", "model", "benchmark", "method", "method_key", "budget", "setting", "value", "metric", "evidence", "note"]

BENCH = {
    "VQAT": "TextVQA",
    "TextVQA": "TextVQA",
    "SQA": "SQA-IMG",
    "SQA-IMG": "SQA-IMG",
    "MMB": "MMBench",
    "MMB-CN": "MMBench-CN",
    "MMVet": "MM-Vet",
    "MM-Vet": "MM-Vet",
    "SEED": "SEED-I",
    "SEED-I": "SEED-I",
    "LLaVA-B": "LLaVA-Bench",
    "ConB": "ConBench",
    "OCR": "OCRBench",
    "OCRBench": "OCRBench",
    "POPE": "POPE",
    "GQA": "GQA",
    "VQAv2": "VQAv2",
    "VizWiz": "VizWiz",
    "MMMU": "MMMU",
    "Avg": "RelAcc",
    "Rel": "RelAcc",
    "Acc": "Acc",
    "TGIF": "TGIF",
    "MSVD": "MSVD",
    "MSRVTT": "MSRVTT",
    "ActivityNet": "ActivityNet",
    "Nocaps": "Nocaps",
    "Flickr30k": "Flickr30k",
    "A-OKVQA": "A-OKVQA",
    "AI2D": "AI2D",
    "SEED-Bench": "SEED-Bench",
    "MME-P": "MME (perception)",
    "MME-C": "MME (cognition)",
}
METHOD_KEY = {
    "vanilla": "none",
    "fastv": "fastv",
    "sparsevlm": "sparsevlm",
    "sparsevlm (v1)": "sparsevlm",
    "sparsevlm†": "sparsevlm",
    "visionzip": "visionzip",
    "visionzip‡": "visionzip-ft",
    "vispruner": "vispruner",
    "tome": "tome",
    "prumerge+": "prumerge+",
    "hiprune": "hiprune",
    "hiprune++": "hiprune++",
    "dart": "dart",
    "dart†": "dart",
    "divprune": "divprune",
    "learnpruner": "learnpruner",
    "pdrop": "pdrop",
    "pyramiddrop": "pdrop",
    "fastervlm": "fastervlm",
    "hired†": "hired",
    "trim†": "trim",
    "mustdrop": "mustdrop",
    "twigvlm": "twigvlm",
    "video-llava": "none",
    "0 visual tokens": "no-visual-tokens",
    "baseline": "none",
    "next-7b": "none",
    "fastv (k=0)": "random",
}
RELACC = "relative accuracy, % (mean over the table's benchmarks of method / vanilla)"
ACC_VP = "VisPruner Acc: mean of raw scores with MME/20"
VIDEO_ACC = "GPT-judged accuracy, %"
VIDEO_SCORE = "GPT-judged score (0-5)"

# Cost conventions of the papers (methods-1.md §1.5, §3.4; methods-2.md §0.6, §2.5, §4.5), stated per row.
FASTV_FLOPS = (
    "FastV Eq. 5: per-layer average of 4nd^2 + 2n^2d + 2ndm with n = 612 (system + image tokens), "
    "multiply-adds counted once, 2 FFN matrices (methods-1.md §1.5)"
)
FASTERVLM_FLOPS = (
    "ViT (~0.381 T per 336 px crop) + sum over the 32 LLM layers of 2(4nd^2 + 2n^2d + 3ndm) over the "
    "visual tokens only, multiply-adds = 2 FLOPs (back-solved, methods-1.md §3.4)"
)
FASTERVLM_KV = "visual-token KV cache averaged over the 32 layers, 0.5 MB per visual token, fp16 (methods-1.md §3.4)"
FASTERVLM_MS = "CUDA time per POPE sample on an A100-80GB, timing scope not stated (methods-1.md §3.4)"


def method_key(label: str) -> str:
    return METHOD_KEY.get(label.strip().lower(), label.strip().lower())


def number(cell: str) -> str | None:
    """The value as printed (markup, percent signs and unit suffixes removed), or None for an empty cell."""
    cell = cell.replace("**", "").replace("%", "").replace("*", "").replace("−", "-").strip()
    cell = re.sub(r"\s*(B|T|MB|GB|G|ms|s|×)$", "", cell)
    if cell in ("", "–", "-"):
        return None
    float(cell)  # a cell that is not a number stops the build here
    return cell


def vals(text: str) -> list[str]:
    """Literal values copied from the reference prose, whitespace-separated ("-" = not printed)."""
    return [None if v == "-" else v for v in text.split()]


def bench_name(col: str, mme: str) -> str:
    if col == "MME":
        return f"MME ({mme})"
    return BENCH.get(col, col)


def metric_of(bench: str, mme: str, acc_metric: str = ACC_VP) -> str:
    if bench == "RelAcc":
        return RELACC
    if bench == "Acc":
        return acc_metric
    if bench.startswith("MME"):
        part = bench[bench.index("(") + 1 : -1]
        return f"MME {part} score (sum of subtask scores)"
    if bench == "POPE":
        return "POPE F1 or accuracy as the paper reports, %"
    if bench == "OCRBench":
        return "OCRBench score (of 1000)"
    if bench in ("Nocaps", "Flickr30k"):
        return "CIDEr"
    return "benchmark score as the paper reports, %"


def md_table(text: str, start: str) -> list[list[str]]:
    """Rows (cells) of the first markdown table after the line containing ``start``."""
    lines = text.splitlines()
    i = next(n for n, line in enumerate(lines) if start in line)
    while not lines[i].lstrip().startswith("|"):
        i += 1
    rows = []
    while i < len(lines) and lines[i].lstrip().startswith("|"):
        cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
        if not set("".join(cells)) <= set("-: "):
            rows.append(cells)
        i += 1
    return rows


def row(paper, table, model, bench, method, budget, value, *, metric, evidence, setting="", note="", key=None) -> dict:
    return dict(
        paper=paper,
        table=table,
        model=model,
        benchmark=bench,
        method=method,
        method_key=key or method_key(method),
        budget=budget,
        setting=setting,
        value=value,
        metric=metric,
        evidence=evidence,
        note=note,
    )


def emit_table(out, rows, *, paper, table, model, mme, evidence, note="", budget_col=0, method_col=1, acc_metric=ACC_VP, fix=None):
    header = rows[0]
    for cells in rows[1:]:
        label = cells[method_col].replace("**", "").strip()
        budget = cells[budget_col]
        for col, cell in zip(header[method_col + 1 :], cells[method_col + 1 :]):
            value = number(cell)
            if value is None:
                continue
            bench = bench_name(col, mme)
            row_note = note
            if fix and (budget, label, col) in fix:
                _printed, value, why = fix[(budget, label, col)]
                row_note = why
            out.append(row(paper, table, model, bench, label, budget, value, metric=metric_of(bench, mme, acc_metric), evidence=evidence, note=row_note))


BULLET = re.compile(r"^\s*\*\s+(?P<method>[A-Za-z+‡]+)\s+(?P<values>[\d. ]+?)\s*(\((?P<avg>[\d.]+) %\))?\s*$")


def emit_bullets(out, text, start, stop, *, columns, paper, table, model, mme, evidence, vanilla_budget):
    lines = text.splitlines()
    i = next(n for n, line in enumerate(lines) if start in line)
    budget = None
    for line in lines[i + 1 :]:
        if stop in line:
            break
        head = re.match(r"^\s*\*\s+\*\*(Vanilla(?: \d+)?|\d+)(?: \(.*?\))?:\*\*\s*(.*)$", line)
        if head:
            budget = head.group(1)
            rest = head.group(2)
            if budget.startswith("Vanilla"):
                values = re.match(r"([\d. ]+)", rest).group(1).split()
                for col, v in zip(columns, values):
                    b = bench_name(col, mme)
                    out.append(row(paper, table, model, b, "vanilla", vanilla_budget, v, metric=metric_of(b, mme), evidence=evidence))
                budget = None
            continue
        m = BULLET.match(line)
        if m and budget:
            values = m.group("values").split()
            assert len(values) == len(columns), line
            items = list(zip(columns, values)) + ([("Avg", m.group("avg"))] if m.group("avg") else [])
            for col, v in items:
                b = bench_name(col, mme)
                out.append(row(paper, table, model, b, m.group("method"), budget, v, metric=metric_of(b, mme), evidence=evidence))


def add(out, paper, table, model, method, budget, setting, cols, values, *, mme="total", evidence, note="", metrics=None, key=None):
    """Literal values (strings as printed) for ``cols``; ``metrics`` overrides the metric per column."""
    values = vals(values) if isinstance(values, str) else values
    assert len(cols) == len(values), (paper, table, method, budget)
    for col, v in zip(cols, values):
        if v is None:
            continue
        b = bench_name(col, mme)
        metric = (metrics or {}).get(col) or metric_of(b, mme)
        out.append(row(paper, table, model, b, method, budget, v, metric=metric, evidence=evidence, setting=setting, note=note, key=key))


def pairs(out, cells, names, *, paper, table, model, method, budget, evidence, setting="", note="", key=None):
    """Video cells printed as "Acc/Score"."""
    for name, cell in zip(names, cells):
        if not cell.strip():
            continue
        acc, score = (number(x) for x in cell.split("/"))
        out.append(row(paper, table, model, f"{name} acc", method, budget, acc, metric=VIDEO_ACC, evidence=evidence, setting=setting, note=note, key=key))
        out.append(row(paper, table, model, f"{name} score", method, budget, score, metric=VIDEO_SCORE, evidence=evidence, setting=setting, note=note, key=key))


def build(ref: Path) -> list[dict]:
    m1 = (ref / "methods-1.md").read_text()
    m2 = (ref / "methods-2.md").read_text()
    out: list[dict] = []
    build_methods_1(m1, out)
    build_methods_2(m2, out)
    m3 = (ref / "methods-3.md").read_text()
    build_methods_3_holov_scope(m3, out)
    check_provenance(out, m1 + "\n" + m2 + "\n" + m3)
    # rows transcribed by hand from tables printed only as images (project pages): no text to check them against;
    # their evidence column says where each comes from
    with (Path(__file__).parent / "published_manual.csv").open(encoding="utf-8") as handle:
        out += [{f: r.get(f) or "" for f in FIELDS} for r in csv.DictReader(handle)]
    check_provenance(out, None)
    return out


def build_methods_1(m1: str, out: list[dict]) -> None:
    build_fastv(m1, out)
    sv = "SparseVLM v1 (arXiv 2410.04417v1)"
    emit_table(
        out,
        md_table(m1, "**SparseVLM v1 Table 1**"),
        paper=sv,
        table="Table 1",
        model="llava-1.5-7b",
        mme="total",
        evidence="project page HTML (methods-1.md §2.8, §6 A)",
        fix={("64", "FastV", "SQA"): ("55.1", "51.1", "page prints 55.1; 73.5 % x 69.5 = 51.1 and VisionZip Table 1 prints 51.1 (methods-1.md §2.8)")},
    )
    # SparseVLM v1 Table 2 (Video-LLaVA 2048 -> 135 tokens): Acc/Score cells, then "RelAcc %, score change"
    rows = md_table(m1, "**SparseVLM v1 Table 2**")
    ev = "project page HTML (methods-1.md §2.8)"
    names = rows[0][1:5]
    for cells in rows[1:]:
        label, budget = cells[0], ("2048" if cells[0] == "Video-LLaVA" else "135")
        pairs(out, cells[1:5], names, paper=sv, table="Table 2", model="video-llava-7b", method=label, budget=budget, evidence=ev)
        if cells[5].strip():
            rel, delta = (number(x) for x in cells[5].split(","))
            out.append(row(sv, "Table 2", "video-llava-7b", "RelAcc", label, budget, rel, metric="relative GPT-judged accuracy, % (as printed)", evidence=ev))
            out.append(row(sv, "Table 2", "video-llava-7b", "Score change", label, budget, delta, metric="mean GPT score minus vanilla's", evidence=ev))
    vz = "VisionZip (arXiv 2412.04467v1)"
    emit_table(
        out,
        md_table(m1, "### Table B"),
        paper=vz,
        table="Table 1",
        model="llava-1.5-7b",
        mme="total",
        evidence="machine transcription of arXiv v1 HTML (methods-1.md §6 B)",
    )
    # VisionZip-trained LLaVA-1.5-7B: a different model (trained with VisionZip), kept apart from llava-1.5-7b
    ev = "machine transcription of arXiv v1 HTML (methods-1.md §6 B, prose)"
    trained = "llava-1.5-7b (VisionZip-trained)"
    note = "LLaVA-1.5-7B trained with VisionZip; Avg over 12 columns incl. VizWiz; vanilla row not in the source"
    for budget, rel in (("192", "100.6"), ("128", "99.6"), ("64", "97.1")):
        add(out, vz, "Table 1 (trained model)", trained, "VisionZip", budget, "", ["Avg"], [rel], evidence=ev, note=note)
    add(
        out,
        vz,
        "Table 1 (trained model)",
        trained,
        "VisionZip",
        "64",
        "",
        ["GQA", "MMB", "MME", "POPE", "SQA", "VQAv2", "TextVQA", "MMMU", "SEED", "MMVet", "VizWiz", "LLaVA-B"],
        "58.9 63.7 1785 84.1 69.3 76.0 57.1 36.2 55.8 29.9 46.8 63.5",
        evidence=ev,
        note=note,
    )
    vp = "VisPruner (arXiv 2412.01818v2+)"
    emit_table(
        out,
        md_table(m1, "### Table C"),
        paper=vp,
        table="Table 1",
        model="llava-1.5-7b",
        mme="perception",
        evidence="authors' project-page image llava-1.5-7b.png (methods-1.md §6 C)",
    )
    emit_table(
        out,
        md_table(m1, "### Table D"),
        paper=vz,
        table="Table 2",
        model="llava-next-7b",
        mme="total",
        evidence="machine transcription of arXiv v1 HTML (methods-1.md §6 D)",
    )
    build_visionzip_extra(m1, out, vz)
    emit_table(
        out,
        md_table(m1, "### Table E"),
        paper=vp,
        table="LLaVA-NeXT-7B table",
        model="llava-next-7b",
        mme="perception",
        evidence="authors' project-page image llava-next-7b.png (methods-1.md §6 E)",
        note="2880 = 5 x 576 (no unpad/newline); token labels approximate",
    )
    # Table F: Acc/Score pairs
    rows = md_table(m1, "### Table F")
    names = [("Video avg" if c == "Avg" else c) for c in rows[0][2:]]
    for cells in rows[1:]:
        pairs(
            out,
            cells[2:],
            names,
            paper=vp,
            table="Video-LLaVA table",
            model="video-llava-7b",
            method=cells[1],
            budget=cells[0],
            evidence="authors' project-page image video-llava.png (methods-1.md §6 F)",
        )
    # Table G (prose bullets), literal
    g = dict(paper=vp, table="other-VLM table", evidence="authors' project-page image other-vlm.png (methods-1.md §6 G)")
    gcols = ["VQAv2", "GQA", "VizWiz", "SQA-IMG", "TextVQA", "Acc", "Rel"]
    acc_g = {"Acc": "mean of the five scores"}
    for model, base, budget, rows_g in (
        (
            "qwen-vl-7b",
            "256",
            "128",
            [
                ("vanilla", "78.8 59.3 35.2 67.1 63.8 60.8 -"),
                ("FastV", "76.5 56.9 32.7 65.3 58.2 57.9 94.9"),
                ("VisPruner", "77.4 57.8 33.4 65.9 59.6 58.8 96.4"),
            ],
        ),
        (
            "internvl-chat-13b",
            "576",
            "144",
            [
                ("vanilla", "79.3 62.9 52.6 66.3 57.0 63.6 -"),
                ("FastV", "74.1 58.2 50.8 66.6 55.6 61.1 96.1"),
                ("VisPruner", "76.7 60.2 51.9 67.3 55.3 62.3 97.9"),
            ],
        ),
        (
            "cogvlm-chat-1.1-17b",
            "1225",
            "123",
            [
                ("vanilla", "80.9 58.2 49.6 68.4 69.2 65.3 -"),
                ("FastV", "74.2 40.3 42.9 63.5 41.9 52.6 80.2"),
                ("VisPruner", "74.6 48.4 46.6 68.2 59.6 59.5 91.0"),
            ],
        ),
    ):
        for method, values in rows_g:
            add(
                out,
                g["paper"],
                g["table"],
                model,
                method,
                base if method == "vanilla" else budget,
                "",
                gcols,
                values,
                evidence=g["evidence"],
                note="Acc = mean of the five scores",
                metrics=acc_g,
            )
    build_efficiency_tables(m1, out, vp)
    fv = "FasterVLM (arXiv 2412.01818v1)"
    hcols = ["VQAv2", "GQA", "VizWiz", "SQA-IMG", "TextVQA", "POPE", "MME", "MMB", "MMB-CN", "MM-Vet"]
    emit_bullets(
        out,
        m1,
        "**H1, LLaVA-1.5-7B.**",
        "(FitPrune rows omitted.)",
        columns=hcols,
        paper=fv,
        table="H1 (LLaVA-1.5-7B)",
        model="llava-1.5-7b",
        mme="perception",
        evidence="authors' project-page image (methods-1.md §6 H1)",
        vanilla_budget="576",
    )
    emit_bullets(
        out,
        m1,
        "**H2, LLaVA-NeXT-7B (2880 tokens).**",
        "**H3",
        columns=hcols,
        paper=fv,
        table="H2 (LLaVA-NeXT-7B)",
        model="llava-next-7b",
        mme="perception",
        evidence="authors' project-page image (methods-1.md §6 H2)",
        vanilla_budget="2880",
    )
    # H1 "0 tokens" row is a method-less bullet: literal
    add(
        out,
        fv,
        "H1 (LLaVA-1.5-7B)",
        "llava-1.5-7b",
        "0 visual tokens",
        "0",
        "",
        hcols + ["Avg"],
        "40.73 37.38 45.36 63.06 41.43 47.21 719.10 20.02 17.70 11.30 56.50",
        mme="perception",
        evidence="authors' project-page image (methods-1.md §6 H1)",
        note="row printed without a method name ('0 tokens')",
    )
    build_fastervlm_video(m1, out, fv)


def build_fastv(m1: str, out: list[dict]) -> None:
    """FastV's own tables (methods-1.md §1.5-1.6). FastV at K = 0 prunes before the LLM (random in effect, as the
    paper labels it): those rows carry the key ``random``. The paper gives pruning ratios R, not token counts."""
    paper = "FastV (arXiv 2403.06764)"
    ev = "third-party transcription of the ECCV paper (methods-1.md §1.6)"
    rows = md_table(m1, "**FastV paper, Table 1")
    header = rows[0]
    metric = {"FLOPs": FASTV_FLOPS, "Avg": "mean of the four raw scores"}
    for cells in rows[1:]:
        setting = cells[0]
        if setting == "baseline":
            method, budget, setting_text, key = "vanilla", "576", "", "none"
        else:
            k, r = re.match(r"(\d)/(\d+) %", setting).groups()
            method, budget, setting_text = "FastV", "", f"K={k}, R={r} %"
            key = "random" if k == "0" else "fastv"
        for col, cell in zip(header[1:], cells[1:]):
            bench = "FLOPs/layer (B)" if col == "FLOPs" else ("Acc" if col == "Avg" else BENCH[col])
            out.append(
                row(
                    paper,
                    "Table 1",
                    "llava-1.5-7b",
                    bench,
                    method,
                    budget,
                    number(cell),
                    key=key,
                    metric=metric.get(col) or metric_of(bench, "total"),
                    evidence=ev,
                    setting=setting_text,
                    note="K = 0: pruning before the LLM, random in effect (the paper's '(random)')" if key == "random" else "",
                )
            )
    cols = ["FLOPs/layer (B)", "Nocaps", "Flickr30k", "A-OKVQA", "MMMU", "Acc"]
    metrics = {"FLOPs/layer (B)": FASTV_FLOPS, "Acc": "mean of the four raw scores"}
    add(out, paper, "Table 1", "llava-1.5-13b", "vanilla", "576", "", cols, "154.6 102.8 73.0 82.0 36.4 73.6", evidence=ev, metrics=metrics)
    add(out, paper, "Table 1", "llava-1.5-13b", "FastV", "", "K=2, R=50 %", cols, "84.6 103.1 73.4 81.0 36.7 73.6", evidence=ev, metrics=metrics)
    add(
        out,
        paper,
        "Table 1",
        "qwen-vl-7b",
        "vanilla",
        "",
        "unpruned",
        ["FLOPs/layer (B)", "Acc"],
        "71.9 69.7",
        evidence=ev,
        metrics=metrics,
        note="only the FLOPs and the average are transcribed",
    )
    add(out, paper, "Table 1", "qwen-vl-7b", "FastV", "", "K=2, R=50 %", ["Acc"], "69.2", evidence=ev, metrics=metrics)
    t2 = ["AI2D", "SQA-IMG", "SEED-Bench", "MM-Vet", "MME"]
    add(out, paper, "Table 2", "llava-1.5-13b", "vanilla", "576", "", t2, "59.45 72.99 68.23 30.55 1827.75", evidence=ev)
    add(out, paper, "Table 2", "llava-1.5-13b", "FastV", "", "K=2, R=50 %", t2, "58.96 73.23 68.03 31.25 1849.68", evidence=ev)
    # Table 4: latency of a one-token A-OKVQA answer on one A40, FastV at K = 0, R = 50 %
    t4 = ["Latency (s)", "GPU mem (GB)", "A-OKVQA"]
    m4 = {"Latency (s)": "per-example latency of a one-token A-OKVQA answer on one A40 (total time / examples), seconds", "GPU mem (GB)": "GPU memory, GB, A40"}
    for model, base, pruned in (("llava-1.5-7b", "0.344 19 76.7", "0.230 16 75.3"), ("llava-1.5-13b", "0.539 38 82.0", "0.341 30 80.5")):
        add(out, paper, "Table 4", model, "vanilla", "576", "", t4, base, evidence=ev, metrics=m4)
        add(
            out,
            paper,
            "Table 4",
            model,
            "FastV",
            "",
            "K=0, R=50 %",
            t4,
            pruned,
            evidence=ev,
            metrics=m4,
            key="random",
            note="K = 0: pruning before the LLM, random in effect",
        )
    # Table 6: Video-LLaVA, accuracy as a fraction (0-1), unlike the other video tables
    t6 = ["TGIF acc (0-1)", "MSVD acc (0-1)", "MSRVTT acc (0-1)"]
    m6 = {c: "GPT-3.5-judged accuracy as a fraction (0-1), first 1000 samples of each set" for c in t6}
    add(out, paper, "Table 6", "video-llava-7b", "vanilla", "", "unpruned", t6, "0.18 0.70 0.56", evidence=ev, metrics=m6)
    add(
        out,
        paper,
        "Table 6",
        "video-llava-7b",
        "FastV",
        "",
        "K=2, R=50 %",
        t6 + ["FLOPs (%)"],
        "0.21 0.71 0.55 52.3",
        evidence=ev,
        metrics=m6 | {"FLOPs (%)": "FLOPs relative to the unpruned model, %"},
    )
    # README: lmms-eval numbers (K = 3, R = 50 %) and first-token latency of the 13B model
    ev_r = "FastV README (methods-1.md §1.5, §1.6)"
    rc = ["GQA", "SEED-I", "MMMU", "MME-P", "MME-C", "Nocaps", "Flickr30k"]
    add(
        out,
        paper,
        "README (lmms-eval)",
        "llava-1.5-7b",
        "vanilla",
        "576",
        "",
        rc,
        "62.0 60.5 35.3 1510.8 348.2 105.5 74.9",
        evidence=ev_r,
        note="lmms-eval metrics",
    )
    add(
        out,
        paper,
        "README (lmms-eval)",
        "llava-1.5-7b",
        "FastV",
        "",
        "K=3, R=50 %",
        rc,
        "60.4 59.9 35.2 1511.7 349.3 105.5 74.7",
        evidence=ev_r,
        note="lmms-eval metrics; the README states FLOPs = 57 %",
    )
    lat = {
        "Latency (s)": "latency of the first output token (max_new_tokens=1, use_cache=False), fp16, A100 80G, seconds",
        "GPU mem (GB)": "GPU memory, GB, A100 80G",
    }
    add(out, paper, "README (latency)", "llava-1.5-13b", "vanilla", "576", "", ["Latency (s)", "GPU mem (GB)"], "0.203 33", evidence=ev_r, metrics=lat)
    for r, ms, mem in (("25", "0.181", "29"), ("50", "0.155", "28"), ("75", "0.124", "27")):
        add(
            out,
            paper,
            "README (latency)",
            "llava-1.5-13b",
            "FastV",
            "",
            f"K=2, R={r} %",
            ["Latency (s)", "GPU mem (GB)"],
            [ms, mem],
            evidence=ev_r,
            metrics=lat,
            note="in-place FastV; the 4-bit rows of the README are not shipped",
        )


def build_visionzip_extra(m1: str, out: list[dict], vz: str) -> None:
    """VisionZip Table 3 (video), the 13B table and the NeXT POPE / SEED-I appendix (methods-1.md §4.6)."""
    ev = "machine transcription of arXiv v1 HTML (methods-1.md §4.6)"
    rows = md_table(m1, "* Table 3 (Video-LLaVA @136 tokens)")
    header = rows[0]
    for cells in rows[1:]:
        label = cells[0]
        budget = "2048" if label == "Video-LLaVA" else "136"
        note = "copied by VisionZip from SparseVLM v1 Table 2" if label in ("FastV", "SparseVLM") else ""
        for col, cell in zip(header[1:], cells[1:]):
            bench = "RelAcc" if col == "avg" else f"{col} acc"
            metric = "relative GPT-judged accuracy, % (as printed)" if col == "avg" else VIDEO_ACC
            out.append(row(vz, "Table 3", "video-llava-7b", bench, label, budget, number(cell), metric=metric, evidence=ev, note=note))
    cols = ["GQA", "MMB", "MME", "POPE", "SQA", "VQAv2", "TextVQA", "MMMU", "SEED-I", "MMVet", "LLaVA-B"]
    note = "Avg excludes LLaVA-B and MM-Vet"
    add(
        out,
        vz,
        "LLaVA-1.5-13B table",
        "llava-1.5-13b",
        "vanilla",
        "576",
        "",
        cols,
        "63.2 67.7 1818 85.9 72.8 80.0 61.3 36.4 66.9 35.3 70.8",
        evidence=ev,
        note=note,
    )
    add(
        out,
        vz,
        "LLaVA-1.5-13B table",
        "llava-1.5-13b",
        "VisionZip",
        "64",
        "",
        cols,
        "56.2 64.9 1676 76.0 74.4 73.7 57.4 36.4 60.4 33.9 70.3",
        evidence=ev,
        note=note,
    )
    for budget, plain, tuned in (("192", "97.9", "98.7"), ("128", "97.0", "97.4"), ("64", "93.7", "94.8")):
        add(out, vz, "LLaVA-1.5-13B table", "llava-1.5-13b", "VisionZip", budget, "", ["Avg"], [plain], evidence=ev, note=note)
        add(out, vz, "LLaVA-1.5-13B table", "llava-1.5-13b", "VisionZip‡", budget, "", ["Avg"], [tuned], evidence=ev, note=note)
    rows = md_table(m1, "* NeXT-7B POPE and SEED-I")
    table = "appendix (LLaVA-NeXT-7B)"
    add(out, vz, table, "llava-next-7b", "vanilla", "2880", "", ["POPE", "SEED-I"], "86.4 70.2", evidence=ev)
    budgets = rows[0][1:]
    for cells in rows[1:]:
        for budget, cell in zip(budgets, cells[1:]):
            pope, seed = (number(x) for x in cell.split("/"))
            add(out, vz, table, "llava-next-7b", cells[0], budget, "", ["POPE", "SEED-I"], [pope, seed], evidence=ev)


def build_efficiency_tables(m1: str, out: list[dict], vp: str) -> None:
    """VisPruner's and FasterVLM's efficiency tables (LLaVA-NeXT-7B, POPE, A100-80GB; methods-1.md §3.4)."""
    ev = "authors' project-page image efficiency.png (methods-1.md §3.4)"
    metrics = {"TFLOPs": FASTERVLM_FLOPS, "KV (MB)": FASTERVLM_KV, "GPU mem (GB)": "GPU memory, GB (A100-80GB)", "Latency (ms)": FASTERVLM_MS}
    rows = md_table(m1, "**VisPruner efficiency table (project page):**")
    cols = ["TFLOPs", "KV (MB)", "GPU mem (GB)", "Latency (ms)"]
    for cells in rows[1:]:
        method = "vanilla" if cells[0] == "NeXT-7B" else cells[0]
        add(
            out,
            vp,
            "efficiency table",
            "llava-next-7b",
            method,
            cells[1],
            "",
            cols,
            [number(c) for c in cells[2:6]],
            evidence=ev,
            metrics=metrics,
            note="" if method == "vanilla" else "token labels approximate: the values equal FasterVLM's 720- and 145-token rows",
        )
    fv = "FasterVLM (arXiv 2412.01818v1)"
    rows = md_table(m1, "* FasterVLM efficiency table")
    cols = ["TFLOPs", "KV (MB)", "GPU mem (GB)", "Latency (ms)", "POPE"]
    metrics = metrics | {"POPE": "POPE accuracy, %"}
    for cells in rows[1:]:
        method = "vanilla" if cells[0] == "baseline" else cells[0].split(" (")[0]
        budget = cells[1].split(" (")[0]
        note = "" if cells[4] else "GPU memory cell blank in the source (not shipped)"
        split = [c.split(" / ") for c in cells[2:7]]
        if any(len(s) == 2 for s in split):  # FasterVLM rows print "SDPA / FlashAttention-2" pairs
            for i, attn in enumerate(("SDPA", "FlashAttention-2")):
                values = [number(s[i] if len(s) == 2 else s[0]) for s in split]
                add(out, fv, "efficiency table", "llava-next-7b", method, budget, attn, cols, values, evidence=ev, metrics=metrics, note=note)
        else:
            add(
                out, fv, "efficiency table", "llava-next-7b", method, budget, "", cols, [number(c) for c in cells[2:7]], evidence=ev, metrics=metrics, note=note
            )


def build_fastervlm_video(m1: str, out: list[dict], fv: str) -> None:
    lines = m1.splitlines()
    i = next(n for n, line in enumerate(lines) if "**H3, Video-LLaVA**" in line)
    budget = None
    vids = ["TGIF", "MSVD", "MSRVTT", "ActivityNet"]
    ev = "authors' project-page image (methods-1.md §6 H3)"
    for line in lines[i + 1 :]:
        if line.startswith("**H4"):
            break
        head = re.match(r"^\s*\*\s+\*\*(Vanilla \d+|\d+):\*\*\s*(.*)$", line)
        pairs_line = None
        if head:
            budget = head.group(1)
            if budget.startswith("Vanilla"):
                pairs_line, method, budget_v, avgs = head.group(2), "vanilla", budget.split()[1], None
                budget = None
        else:
            m = re.match(r"^\s*\*\s+(FastV|FasterVLM)\s+(.*?)\s*\(([\d.]+) / ([\d.]+)\)\s*$", line)
            if m and budget:
                pairs_line, method, budget_v, avgs = m.group(2), m.group(1), budget, (m.group(3), m.group(4))
        if pairs_line is None:
            continue
        cells = [p.strip() for p in pairs_line.split(",")]
        assert len(cells) == 4, line
        pairs(out, cells, vids, paper=fv, table="H3 (Video-LLaVA)", model="video-llava-7b", method=method, budget=budget_v, evidence=ev)
        if avgs:
            for bench, v, metric in (("RelAcc", avgs[0], "relative accuracy (Acc), %"), ("RelAcc (score)", avgs[1], "relative GPT score, %")):
                out.append(row(fv, "H3 (Video-LLaVA)", "video-llava-7b", bench, method, budget_v, v, metric=metric, evidence=ev))


def build_methods_2(m2: str, out: list[dict]) -> None:
    hp = "HiPrune (arXiv 2508.00553, ACL version)"
    emit_table(
        out,
        md_table(m2, "**Table 2 — LLaVA-1.5-7B**"),
        paper=hp,
        table="Table 2",
        model="llava-1.5-7b",
        mme="total",
        evidence="paper text (methods-2.md §2.6)",
        note="† = reproduced by the HiPrune authors; other rows copied from VScan",
    )
    dart = "DART (arXiv 2502.11494, EMNLP version)"
    emit_table(
        out,
        md_table(m2, "**Table 1 — LLaVA-1.5-7B** (GQA, MMB, MMB-CN, MME, POPE, SQA, VQAv2, TextVQA, VizWiz, OCRBench"),
        paper=dart,
        table="Table 1",
        model="llava-1.5-7b",
        mme="total",
        evidence="paper text via OCR conversion; DART rows re-verified (methods-2.md §4.6)",
        note="other 128/64 baseline rows illegible in the source; not shipped",
    )
    d1 = ["GQA", "MMB", "MMB-CN", "MME", "POPE", "SQA", "VQAv2", "TextVQA", "VizWiz", "OCR"]
    add(
        out,
        dart,
        "Table 1",
        "llava-1.5-7b",
        "PDrop",
        "64",
        "",
        d1 + ["Avg"],
        "41.9 33.3 50.5 1092 55.9 68.6 69.2 45.9 50.7 250 78.1",
        evidence="paper text via OCR conversion, as quoted in methods-2.md §5.3",
        note="HiPrune Table 2 quotes a different PDrop reproduction",
    )
    for method, budget, v in (("FiCoCo-V", "64", "91.5"), ("SparseVLM", "64", "84.6"), ("HiRED", "64", "87.0"), ("PruMerge", "64", "87.4")):
        add(
            out,
            dart,
            "Table 1",
            "llava-1.5-7b",
            method,
            budget,
            "",
            ["Avg"],
            [v],
            evidence="paper text via OCR conversion (methods-2.md §4.6)",
            note="only the average is legible in the source",
        )
    for budget, v in (("192", "100.4"), ("64", "97.2")):
        add(out, dart, "Table 1", "llava-1.5-7b", "DART†", budget, "applied during training", ["Avg"], [v], evidence="paper text (methods-2.md §4.6)")
    d3 = ["GQA", "MMB", "MMB-CN", "MME", "POPE", "SQA", "VQAv2", "TextVQA", "VizWiz", "OCR"]
    ev = "paper text (methods-2.md §4.6)"
    add(
        out,
        dart,
        "Table 3",
        "llava-next-7b",
        "vanilla",
        "",
        "unpruned",
        d3,
        "64.2 67.4 60.6 1851 86.5 70.1 81.8 64.9 57.6 517",
        evidence=ev,
        note="the unpruned token count is not given in the source",
    )
    add(out, dart, "Table 3", "llava-next-7b", "DART", "320", "", d3 + ["Avg"], "61.7 65.3 58.2 1710 84.1 68.4 79.1 58.7 56.1 406 93.9", evidence=ev)
    for method, v in (
        ("FastV", "86.4"),
        ("HiRED", "91.8"),
        ("PruMerge", "79.9"),
        ("SparseVLM", "85.9"),
        ("PDrop", "86.8"),
        ("MustDrop", "90.4"),
        ("FasterVLM", "89.8"),
        ("GlobalCom2", "90.3"),
    ):
        add(out, dart, "Table 3", "llava-next-7b", method, "320", "", ["Avg"], [v], evidence=ev)
    # Table 2: efficiency on LLaVA-NeXT-7B, POPE, A100-80G (wall times in min:sec are not shipped)
    ev2 = "paper text (methods-2.md §4.5)"
    e2 = {
        "FLOPs (%)": "FLOPs relative to the unpruned model, %",
        "KV (MB)": "visual-token KV cache only, MB (ignores DART's full-length KV in layers 0-1; methods-2.md §0.6)",
        "POPE": "POPE F1, %",
        "Total speed-up (x)": "whole POPE run wall time, unpruned / pruned",
        "Prefill speed-up (x)": "POPE prefill wall time, unpruned / pruned",
    }
    e2cols = ["FLOPs (%)", "KV (MB)", "POPE", "Total speed-up (x)", "Prefill speed-up (x)"]
    note2 = "wall times (min:sec) of the source are not shipped"
    for method, budget, values in (
        ("vanilla", "2880", "100 1512.1 86.5 - -"),
        ("FastV", "320", "12.8 168.0 78.3 1.98 2.97"),
        ("SparseVLM", "320", "15.6 168.0 82.3 1.56 -"),
        ("DART", "320", "12.8 168.0 84.1 1.99 2.99"),
    ):
        add(out, dart, "Table 2 (efficiency)", "llava-next-7b", method, budget, "", e2cols, values, evidence=ev2, metrics=e2, note=note2)
    q4 = ["GQA", "MMB", "MMB-CN", "MME", "POPE", "SQA", "TextVQA"]
    add(out, dart, "Table 4", "qwen2-vl-7b", "vanilla", "", "unpruned", q4, "62.2 80.5 81.2 2317 86.1 84.7 82.1", evidence=ev)
    for setting, values, fast in (
        ("reduction 66.7 %", "60.2 78.9 78.0 2245 83.9 81.4 80.5 97.0", "94.0"),
        ("reduction 77.8 %", "58.5 77.3 77.1 2175 82.1 79.6 75.3 94.3", "91.0"),
        ("reduction 88.9 %", "55.5 72.0 71.7 2052 77.9 77.6 61.8 87.5", "84.0"),
    ):
        add(out, dart, "Table 4", "qwen2-vl-7b", "DART", "", setting, q4 + ["Avg"], values, evidence=ev)
        add(out, dart, "Table 4", "qwen2-vl-7b", "FastV", "", setting, ["Avg"], [fast], evidence=ev)
    t6 = [f"{n} {k}" for n in ("TGIF", "MSVD", "MSRVTT", "Video avg") for k in ("acc", "score")]
    m6 = {c: (VIDEO_ACC if c.endswith("acc") else VIDEO_SCORE) for c in t6}
    for method, values in (
        ("vanilla", "47.0 3.4 70.2 3.9 57.3 3.5 58.2 3.6"),
        ("FastV", "45.2 3.1 71.0 3.9 55.0 3.5 57.1 3.5"),
        ("DART", "46.3 3.4 71.0 4.0 56.7 3.6 58.0 3.7"),
    ):
        add(out, dart, "Table 6", "video-llava-7b", method, "", "unpruned" if method == "vanilla" else "50 % retained", t6, values, evidence=ev, metrics=m6)
    tops = ["GQA", "SQA", "TextVQA", "POPE", "MME", "MMB", "MMB-CN", "MMVet"]
    ev_tops = "third-party re-implementation: TOPS App. Table 11 (methods-2.md §1.6, §4.6) [2ND]"
    add(
        out,
        "TOPS (third party)",
        "App. Table 11",
        "llava-1.5-7b",
        "vanilla",
        "576",
        "",
        tops,
        "61.9 69.5 58.2 85.9 1506.5 64.7 58.1 31.3",
        mme="perception",
        evidence=ev_tops,
    )
    for budget, values in (
        ("128", "59.4 68.6 55.9 87.0 1405.1 61.5 54.8 30.6 96.7"),
        ("64", "57.5 68.0 54.5 85.5 1334.7 60.1 52.3 28.1 93.7"),
        ("32", "54.9 68.6 52.9 81.5 1284.9 57.6 49.1 26.3 90.2"),
    ):
        add(
            out,
            "TOPS (third party)",
            "App. Table 11",
            "llava-1.5-7b",
            "DivPrune",
            budget,
            "",
            tops + ["Rel"],
            values,
            mme="perception",
            evidence=ev_tops,
            note="re-implementation by another paper, not DivPrune's own numbers",
        )
    add(
        out,
        "TOPS (third party)",
        "App. Table 11",
        "llava-1.5-7b",
        "DART",
        "32",
        "",
        tops + ["Rel"],
        "52.9 69.3 52.2 69.1 1273.3 58.5 50.0 25.0 87.3",
        mme="perception",
        evidence=ev_tops,
        note="re-implementation by another paper",
    )
    for budget, rel in (("128", "95.7"), ("64", "91.3")):
        add(
            out,
            "TOPS (third party)",
            "App. Table 11",
            "llava-1.5-7b",
            "DART",
            budget,
            "",
            ["Rel"],
            [rel],
            evidence=ev_tops,
            note="re-implementation by another paper",
        )
    # DivPrune paper (secondary summary; no token budget)
    dcols = ["COCO CIDEr", "GQA EM", "MMBench", "OK-VQA", "POPE F1", "SEED"]
    ev_dp = "paper-note summary of arXiv 2503.02175 Table 1 (methods-2.md §1.6) [2ND]"
    for method, values in (
        ("vanilla", "1.10 61.96 64.09 53.39 85.84 66.17"),
        ("DivPrune", "0.96 56.85 59.19 46.98 86.02 59.47"),
        ("FastV", "0.06 38.73 20.62 18.32 32.84 35.69"),
    ):
        for col, v in zip(dcols, vals(values)):
            out.append(
                row(
                    "DivPrune (arXiv 2503.02175)",
                    "Table 1",
                    "llava-1.5-7b",
                    col,
                    method,
                    "",
                    v,
                    metric="lmms-eval metric",
                    evidence=ev_dp,
                    setting="unpruned" if method == "vanilla" else "~84-90 % pruning, same TFLOP budget",
                    note="unverified secondary source",
                )
            )
    build_hiprune_extra(out, hp)
    build_secondary(out)


def build_hiprune_extra(out: list[dict], hp: str) -> None:
    n9 = ["MMB", "MMB-CN", "POPE", "SQA", "VizWiz"]
    ev = "paper text (methods-2.md §2.6)"
    add(
        out,
        hp,
        "Table 3/9",
        "llava-next-7b",
        "vanilla",
        "",
        "unpruned",
        n9,
        "67.4 60.6 86.5 70.1 57.6",
        evidence=ev,
        note="the unpruned token count is not given in the source",
    )
    for budget, values in (("640", "67.0 59.3 85.3 68.0 59.9 99.4"), ("320", "65.3 57.0 78.9 67.3 59.9 96.4"), ("160", "59.8 50.7 67.7 68.7 57.2 89.6")):
        add(out, hp, "Table 3/9", "llava-next-7b", "HiPrune", budget, "", n9 + ["Avg"], values, evidence=ev)
    for i, budget in enumerate(("640", "320", "160")):
        for method, rels in (
            ("HiPrune++", ("99.7", "98.4", "94.4")),
            ("VisionZip", ("98.1", "94.8", "90.5")),
            ("VisPruner", ("98.1", "96.4", "92.0")),
            ("PDrop", ("94.3", "81.6", None)),
            ("SparseVLM", ("96.5", "93.2", None)),
            ("FastV", ("92.7", "78.1", None)),
        ):
            if rels[i] is not None:
                add(
                    out,
                    hp,
                    "Table 3/9",
                    "llava-next-7b",
                    method,
                    budget,
                    "",
                    ["Avg"],
                    [rels[i]],
                    evidence=ev,
                    note="" if method == "HiPrune++" else "baseline numbers taken from CDPruner",
                )
    for budget, values in (("640", "65.0 56.4 85.4 67.9 58.6 97.4"), ("320", "63.9 55.2 83.0 67.7 57.4 95.6"), ("160", "62.5 52.3 78.4 68.3 57.5 93.4")):
        add(
            out,
            hp,
            "Table 3/9",
            "llava-next-7b",
            "DivPrune",
            budget,
            "",
            n9 + ["Avg"],
            values,
            evidence=ev,
            note="numbers taken from CDPruner (re-implementation)",
        )
    # HiPrune Table 4, Qwen2.5-VL-3B (retain ratios, no token count)
    add(out, hp, "Table 4", "qwen2.5-vl-3b", "vanilla", "", "unpruned", n9, "77.3 73.0 87.0 80.4 68.3", evidence=ev)
    t4 = {
        "FastV": [("33.3", "74.4 70.6 85.0 79.3 66.9 97.4"), ("22.2", "72.4 69.2 82.7 79.6 66.2 95.9"), ("11.1", "56.2 60.7 73.3 79.3 63.8 86.4")],
        "VisionZip": [("33.3", "74.9 69.8 85.4 80.1 67.1 97.7"), ("22.2", "73.5 67.4 84.6 80.0 66.3 96.2"), ("11.1", "67.8 63.3 80.2 79.5 62.8 91.5")],
        "HiPrune": [("33.3", "75.9 71.4 85.9 79.4 68.4 98.7"), ("22.2", "73.7 69.1 84.9 80.2 67.1 97.1"), ("11.1", "69.6 65.4 80.4 79.1 64.6 93.0")],
        "HiPrune++": [("33.3", "76.0 71.1 85.9 79.9 68.0 98.7"), ("22.2", "74.2 69.4 84.4 80.2 66.7 97.1"), ("11.1", "70.5 64.7 79.9 79.4 64.5 93.0")],
    }
    for method, entries in t4.items():
        for ratio, values in entries:
            add(
                out,
                hp,
                "Table 4",
                "qwen2.5-vl-3b",
                method,
                "",
                f"retain {ratio} %",
                n9 + ["Avg"],
                values,
                evidence=ev,
                note="all reproduced by the HiPrune authors",
            )
    # Table 5: efficiency on LLaVA-1.5-7B (methods-2.md §2.5, §0.6)
    ev5 = "paper text (methods-2.md §2.5)"
    e5 = {
        "TFLOPs": "calflops on a single forward of a ~600-token example",
        "Latency (ms)": "CUDA events around the LLM forward at prefill (excludes the ViT and the pruning), use_cache=False, A100-PCIE-40G",
        "Decode (ms)": "decode step without KV cache, ms",
        "Throughput (tok/s)": "generated tokens per second",
        "GPU mem (GB)": "GPU memory, GB",
    }
    e5cols = ["TFLOPs", "Latency (ms)", "Decode (ms)", "Throughput (tok/s)", "GPU mem (GB)"]
    for method, budget, values in (
        ("vanilla", "576", "8.63 54.31 21.85 44.42 14.52"),
        ("HiPrune", "192", "3.56 28.56 21.65 45.65 14.52"),
        ("HiPrune", "128", "2.71 25.59 21.53 45.59 -"),
        ("HiPrune", "64", "1.87 21.96 21.33 45.93 -"),
    ):
        add(
            out,
            hp,
            "Table 5 (efficiency)",
            "llava-1.5-7b",
            method,
            budget,
            "",
            e5cols,
            values,
            evidence=ev5,
            metrics=e5,
            note="± standard deviations of the source not shipped",
        )
    q8 = ["GQA", "MMB", "MMB-CN", "MME", "POPE", "SQA", "TextVQA", "VizWiz"]
    add(out, hp, "Table 8", "qwen2.5-vl-7b", "vanilla", "", "unpruned", q8, "60.5 83.2 80.1 2331 86.2 87.4 83.1 70.4", evidence=ev)
    for ratio, values in (
        ("33.3", "58.9 82.6 79.5 2297 85.1 87.0 78.5 69.2"),
        ("22.2", "57.2 80.2 77.6 2168 84.0 85.7 74.1 68.6"),
        ("11.1", "52.5 76.1 73.5 1998 80.2 82.8 62.6 66.4"),
    ):
        add(out, hp, "Table 8", "qwen2.5-vl-7b", "HiPrune", "", f"retain {ratio} %", q8, values, evidence=ev)


def build_secondary(out: list[dict]) -> None:
    # LearnPruner (secondary)
    lp = "LearnPruner (arXiv 2604.23950v1)"
    ev_lp = "paper-note summary (methods-2.md §3.7) [2ND]; per-benchmark tables not available"
    for model, budget, method, v in (
        ("llava-1.5-7b", "128", "LearnPruner", "98.5"),
        ("llava-1.5-7b", "128", "VisPruner", "97.3"),
        ("llava-1.5-7b", "128", "TwigVLM", "99.0"),
        ("llava-1.5-7b", "64", "LearnPruner", "96.9"),
        ("llava-1.5-7b", "64", "TwigVLM", "96.0"),
        ("llava-1.5-7b", "32", "LearnPruner", "94.8"),
        ("llava-1.5-7b", "32", "VisPruner", "89.7"),
        ("llava-1.5-7b", "32", "DivPrune", "90.5"),
        ("llava-next-7b", "160", "LearnPruner", "94.0"),
        ("llava-next-7b", "160", "VisionZip‡", "93.3"),
        ("qwen2.5-vl-7b", "142", "LearnPruner", "94.1"),
        ("qwen2.5-vl-7b", "142", "FastV", "71.4"),
    ):
        add(out, lp, "main results", model, method, budget, "", ["Avg"], [v], evidence=ev_lp, note="unverified secondary source; benchmark list unknown")
    # Table 5 efficiency: ratios to the unpruned model only (no absolute numbers in the source)
    e5 = {
        "Prefill speed-up (x)": "prefill time, unpruned / pruned (A100-80GB, POPE)",
        "Total speed-up (x)": "total time, unpruned / pruned",
        "KV reduction (x)": "KV-cache size, unpruned / pruned",
        "TFLOPs reduction (x)": "TFLOPs, unpruned / pruned",
    }
    cols = list(e5)
    ev5 = "paper-note summary of Table 5 (methods-2.md §3.7) [2ND]"
    add(
        out,
        lp,
        "Table 5 (efficiency)",
        "llava-1.5-7b",
        "LearnPruner",
        "32",
        "",
        cols,
        "2.3 1.5 6.8 5.4",
        evidence=ev5,
        metrics=e5,
        note="unverified secondary source",
    )
    add(
        out,
        lp,
        "Table 5 (efficiency)",
        "llava-next-7b",
        "LearnPruner",
        "160",
        "",
        cols,
        "6.0 3.2 - -",
        evidence=ev5,
        metrics=e5,
        note="unverified secondary source",
    )
    # TwigVLM README (methods-2.md §6.2): R = 192 is TwigVLM's layer-averaged budget
    tw = "TwigVLM (arXiv 2503.14075)"
    ev_t = "TwigVLM README (methods-2.md §6.2) [2ND]"
    add(
        out,
        tw,
        "README",
        "llava-1.5-7b",
        "TwigVLM",
        "192",
        "",
        ["GQA", "MME", "MMB", "SQA", "TextVQA", "VQAv2", "Avg"],
        "61.2 1848 64.0 68.9 58.0 78.1 99.2",
        evidence=ev_t,
        note="the README's MME is on the total scale (perception + cognition); no vanilla row",
    )
    for method, v in (("SparseVLM", "95.7"), ("MustDrop", "96.6"), ("VisionZip", "97.4"), ("VisionZip*", "98.3")):
        add(
            out,
            tw,
            "README",
            "llava-1.5-7b",
            method,
            "192",
            "",
            ["Avg"],
            [v],
            evidence=ev_t,
            note="printed as 'VisionZip*' (not identified further in the source)" if method.endswith("*") else "",
        )


# -- methods-3 block (HoloV, SCOPE; added with the 2026 baseline set) --------------------------------------------------
def build_methods_3_holov_scope(m3: str, out: list[dict]) -> None:
    """HoloV and SCOPE on LLaVA-1.5-7B at 192/128/64: the PIO-FVLM reprint's rows (a third-party table; the papers'
    own LLaVA-1.5 tables were not transcribed), literal values of methods-3.md §5.7 / §6.5. DART's own rows and
    PruMerge+'s third-party rows (VisPruner Table 1) are in the blocks above; no published numbers exist for the
    pooling control."""
    cols = ["GQA", "MMB", "MMB-CN", "MME", "POPE", "SQA", "VQAv2", "TextVQA", "Avg"]
    note = (
        "third-party reprint (PIO-FVLM) [2ND]: unverified; relative accuracy against the reprint's own vanilla row, "
        "which is not shipped; MME = perception + cognition"
    )
    for paper, method, rows in (
        (
            "HoloV (arXiv 2510.02912, PIO-FVLM reprint)",
            "HoloV",
            (
                ("192", "59.0 65.4 58.0 1820 85.6 69.8 76.7 57.4 98.7"),
                ("128", "57.7 63.9 56.5 1802 84.0 69.8 75.5 56.8 97.2"),
                ("64", "55.3 63.3 55.1 1715 80.3 69.5 72.8 55.4 94.4"),
            ),
        ),
        (
            "SCOPE (arXiv 2510.24214, PIO-FVLM reprint)",
            "SCOPE",
            (
                ("192", "60.1 63.6 56.8 1804 86.4 68.8 77.2 57.7 98.3"),
                ("128", "59.7 62.5 56.9 1776 86.1 68.4 76.5 57.2 97.5"),
                ("64", "58.3 61.7 54.4 1698 83.9 68.6 75.3 56.6 95.4"),
            ),
        ),
    ):
        for budget, values in rows:
            add(
                out,
                paper,
                "PIO-FVLM main table",
                "llava-1.5-7b",
                method,
                budget,
                "",
                cols,
                values,
                mme="total",
                evidence="PIO-FVLM reprint (third-party table) [2ND]",
                note=note,
                key=method.lower(),
            )


def check_provenance(rows: list[dict], text: str | None) -> None:
    """Every shipped value must be printed somewhere in the reference (a typo in a literal list stops the build)."""
    if text is not None:  # None: only the duplicate check (hand transcriptions)
        printed = set(re.findall(r"\d+(?:\.\d+)?", text.replace("−", "-")))
        missing = [(r["paper"], r["table"], r["method"], r["benchmark"], r["value"]) for r in rows if r["value"].lstrip("-") not in printed]
        if missing:
            raise SystemExit(f"values not found in the reference text: {missing[:10]}")
    keys = Counter((r["paper"], r["table"], r["model"], r["benchmark"], r["method"], r["budget"], r["setting"]) for r in rows)
    dupes = [k for k, n in keys.items() if n > 1]
    if dupes:
        raise SystemExit(f"duplicate published cells: {sorted(dupes)[:10]}")


def scrub(text: str) -> str:
    """The shipped CSV names papers, tables and pages, not the maintainers' notes this builder reads: every mention
    of a reference file (and its section) is removed from the text users see."""
    text = re.sub(r"\s*\(methods-\d\.md[^()]*\)", "", text)
    text = re.sub(r"[,;]?\s*methods-\d\.md(?:\s*§\s*[\w.]+(?:\s+[A-Z]\d?)?(?:,\s*§\s*[\w.]+(?:\s+[A-Z]\d?)?)*)?", "", text)
    text = re.sub(r",?\s*as quoted in\s*$", "", text)  # "... as quoted in <the notes>" with the notes gone
    return re.sub(r"\(\s*\)", "", text).strip()


def write_csv(rows: list[dict], handle) -> None:
    writer = csv.DictWriter(handle, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: scrub(v) if isinstance(v, str) else v for k, v in r.items()})


def main(argv: list[str]) -> int:
    ref = Path(argv[1] if len(argv) > 1 else "/work/shared/reference")
    write_csv(build(ref), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
