"""Regenerate ``published.csv`` from the project's reference transcriptions (provenance of the shipped data).

    python prunebench/report/data/build_published.py /work/shared/reference > prunebench/report/data/published.csv

Markdown tables and the regular bullet lists are parsed mechanically (no hand copying); the few results given
in prose are listed literally below (``PROSE``) with the section they come from. Cells printed as "–" are
omitted. Columns of the CSV:

    paper, table, model, benchmark, method, method_key, budget, setting, value, metric, evidence, note

``benchmark`` "RelAcc" is a paper's relative accuracy in percent (mean over its benchmarks of method / vanilla);
"Acc" is VisPruner's mean of raw scores with MME/20. MME is split by convention into "MME (total)"
(perception + cognition) and "MME (perception)" so the two are never mixed in one column. ``method_key`` is
the prunebench registry name (``none`` for the unpruned model) so colours and rows line up with measured runs.
"""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

FIELDS = ["paper", "table", "model", "benchmark", "method", "method_key", "budget", "setting", "value", "metric", "evidence", "note"]

BENCH = {
    "VQAT": "TextVQA", "TextVQA": "TextVQA", "SQA": "SQA-IMG", "SQA-IMG": "SQA-IMG", "MMB": "MMBench",
    "MMB-CN": "MMBench-CN", "MMVet": "MM-Vet", "MM-Vet": "MM-Vet", "SEED": "SEED-I", "SEED-I": "SEED-I",
    "LLaVA-B": "LLaVA-Bench", "ConB": "ConBench", "OCR": "OCRBench", "OCRBench": "OCRBench", "POPE": "POPE",
    "GQA": "GQA", "VQAv2": "VQAv2", "VizWiz": "VizWiz", "MMMU": "MMMU", "Avg": "RelAcc", "Rel": "RelAcc",
    "Acc": "Acc", "TGIF": "TGIF", "MSVD": "MSVD", "MSRVTT": "MSRVTT", "ActivityNet": "ActivityNet",
}
METHOD_KEY = {
    "vanilla": "none", "fastv": "fastv", "sparsevlm": "sparsevlm", "sparsevlm (v1)": "sparsevlm", "sparsevlm†": "sparsevlm",
    "visionzip": "visionzip", "visionzip‡": "visionzip-ft", "vispruner": "vispruner", "tome": "tome", "prumerge+": "prumerge+",
    "hiprune": "hiprune", "hiprune++": "hiprune++", "dart": "dart", "divprune": "divprune", "learnpruner": "learnpruner",
    "pdrop": "pdrop", "pyramiddrop": "pdrop", "fastervlm": "fastervlm", "hired†": "hired", "trim†": "trim",
    "mustdrop": "mustdrop", "twigvlm": "twigvlm", "video-llava": "none", "0 visual tokens": "no-visual-tokens",
}
RELACC = "relative accuracy, % (mean over the table's benchmarks of method / vanilla)"
ACC_VP = "VisPruner Acc: mean of raw scores with MME/20"


def method_key(label: str) -> str:
    return METHOD_KEY.get(label.strip().lower(), label.strip().lower())


def number(cell: str) -> float | None:
    cell = cell.replace("**", "").replace("%", "").replace("*", "").strip()
    if cell in ("", "–", "-"):
        return None
    return float(cell)


def bench_name(col: str, mme: str) -> str:
    if col == "MME":
        return f"MME ({mme})"
    return BENCH[col]


def metric_of(bench: str, mme: str, acc_metric: str = ACC_VP) -> str:
    if bench == "RelAcc":
        return RELACC
    if bench == "Acc":
        return acc_metric
    if bench.startswith("MME"):
        return f"MME {mme} score (sum of subtask scores)"
    if bench == "POPE":
        return "POPE F1 or accuracy as the paper reports, %"
    if bench == "OCRBench":
        return "OCRBench score (of 1000)"
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


def emit_table(out, rows, *, paper, table, model, mme, evidence, note="", budget_col=0, method_col=1,
               acc_metric=ACC_VP, fix=None):
    header = rows[0]
    for cells in rows[1:]:
        label = cells[method_col].replace("**", "").strip()
        budget = cells[budget_col]
        for col, cell in zip(header[method_col + 1:], cells[method_col + 1:]):
            value = number(cell)
            if value is None:
                continue
            bench = bench_name(col, mme)
            row_note = note
            if fix and (budget, label, col) in fix:
                printed, value, why = fix[(budget, label, col)]
                row_note = why
            out.append(dict(paper=paper, table=table, model=model, benchmark=bench, method=label,
                            method_key=method_key(label), budget=budget, setting="", value=value,
                            metric=metric_of(bench, mme, acc_metric), evidence=evidence, note=row_note))


BULLET = re.compile(r"^\s*\*\s+(?P<method>[A-Za-z+‡]+)\s+(?P<values>[\d. ]+?)\s*(\((?P<avg>[\d.]+) %\))?\s*$")


def emit_bullets(out, text, start, stop, *, columns, paper, table, model, mme, evidence, vanilla_budget):
    lines = text.splitlines()
    i = next(n for n, line in enumerate(lines) if start in line)
    budget = None
    for line in lines[i + 1:]:
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
                    out.append(dict(paper=paper, table=table, model=model, benchmark=b, method="vanilla", method_key="none",
                                    budget=vanilla_budget, setting="", value=float(v), metric=metric_of(b, mme),
                                    evidence=evidence, note=""))
                budget = None
            continue
        m = BULLET.match(line)
        if m and budget:
            values = m.group("values").split()
            assert len(values) == len(columns), line
            items = list(zip(columns, values)) + ([("Avg", m.group("avg"))] if m.group("avg") else [])
            for col, v in items:
                b = bench_name(col, mme)
                out.append(dict(paper=paper, table=table, model=model, benchmark=b, method=m.group("method"),
                                method_key=method_key(m.group("method")), budget=budget, setting="", value=float(v),
                                metric=metric_of(b, mme), evidence=evidence, note=""))


def add(out, paper, table, model, method, budget, setting, cols, values, *, mme="total", evidence, note=""):
    assert len(cols) == len(values), (paper, table, method, budget)
    for col, v in zip(cols, values):
        if v is None:
            continue
        b = bench_name(col, mme)
        out.append(dict(paper=paper, table=table, model=model, benchmark=b, method=method, method_key=method_key(method),
                        budget=budget, setting=setting, value=v, metric=metric_of(b, mme), evidence=evidence, note=note))


def build(ref: Path) -> list[dict]:
    m1 = (ref / "methods-1.md").read_text()
    m2 = (ref / "methods-2.md").read_text()
    out: list[dict] = []
    sv = "SparseVLM v1 (arXiv 2410.04417v1)"
    emit_table(out, md_table(m1, "**SparseVLM v1 Table 1**"), paper=sv, table="Table 1", model="llava-1.5-7b",
               mme="total", evidence="project page HTML (methods-1.md §2.8, §6 A)",
               fix={("64", "FastV", "SQA"): ("55.1", 51.1, "page prints 55.1; 73.5 % x 69.5 = 51.1 and VisionZip Table 1 prints 51.1 (methods-1.md §2.8)")})
    vz = "VisionZip (arXiv 2412.04467v1)"
    emit_table(out, md_table(m1, "### Table B"), paper=vz, table="Table 1", model="llava-1.5-7b", mme="total",
               evidence="machine transcription of arXiv v1 HTML (methods-1.md §6 B)")
    vp = "VisPruner (arXiv 2412.01818v2+)"
    emit_table(out, md_table(m1, "### Table C"), paper=vp, table="Table 1", model="llava-1.5-7b", mme="perception",
               evidence="authors' project-page image llava-1.5-7b.png (methods-1.md §6 C)")
    emit_table(out, md_table(m1, "### Table D"), paper=vz, table="Table 2", model="llava-next-7b", mme="total",
               evidence="machine transcription of arXiv v1 HTML (methods-1.md §6 D)")
    emit_table(out, md_table(m1, "### Table E"), paper=vp, table="LLaVA-NeXT-7B table", model="llava-next-7b",
               mme="perception", evidence="authors' project-page image llava-next-7b.png (methods-1.md §6 E)",
               note="2880 = 5 x 576 (no unpad/newline); token labels approximate")
    # Table F: Acc/Score pairs
    rows = md_table(m1, "### Table F")
    for cells in rows[1:]:
        for col, cell in zip(rows[0][2:], cells[2:]):
            acc, score = (float(x) for x in cell.split("/"))
            name = "Avg" if col == "Avg" else col
            for kind, v in (("acc", acc), ("score", score)):
                bench = f"{'Video avg' if name == 'Avg' else name} {kind}"
                out.append(dict(paper=vp, table="Video-LLaVA table", model="video-llava-7b", benchmark=bench,
                                method=cells[1], method_key=method_key(cells[1]), budget=cells[0], setting="",
                                value=v, metric="GPT-judged accuracy, %" if kind == "acc" else "GPT-judged score (0-5)",
                                evidence="authors' project-page image video-llava.png (methods-1.md §6 F)", note=""))
    # Table G (prose bullets), literal
    g = dict(paper=vp, table="other-VLM table", evidence="authors' project-page image other-vlm.png (methods-1.md §6 G)")
    gcols = ["VQAv2", "GQA", "VizWiz", "SQA-IMG", "TextVQA", "Acc", "Rel"]
    for model, base, budget, rows_g in (
        ("qwen-vl-7b", "256", "128", [("vanilla", [78.8, 59.3, 35.2, 67.1, 63.8, 60.8, None]),
                                      ("FastV", [76.5, 56.9, 32.7, 65.3, 58.2, 57.9, 94.9]),
                                      ("VisPruner", [77.4, 57.8, 33.4, 65.9, 59.6, 58.8, 96.4])]),
        ("internvl-chat-13b", "576", "144", [("vanilla", [79.3, 62.9, 52.6, 66.3, 57.0, 63.6, None]),
                                             ("FastV", [74.1, 58.2, 50.8, 66.6, 55.6, 61.1, 96.1]),
                                             ("VisPruner", [76.7, 60.2, 51.9, 67.3, 55.3, 62.3, 97.9])]),
        ("cogvlm-chat-1.1-17b", "1225", "123", [("vanilla", [80.9, 58.2, 49.6, 68.4, 69.2, 65.3, None]),
                                                ("FastV", [74.2, 40.3, 42.9, 63.5, 41.9, 52.6, 80.2]),
                                                ("VisPruner", [74.6, 48.4, 46.6, 68.2, 59.6, 59.5, 91.0])]),
    ):
        for method, values in rows_g:
            add(out, g["paper"], g["table"], model, method, base if method == "vanilla" else budget, "", gcols,
                values, evidence=g["evidence"], note="Acc = mean of the five scores")
    for r in out:
        if r["table"] == "other-VLM table" and r["benchmark"] == "Acc":
            r["metric"] = "mean of the five scores"
    fv = "FasterVLM (arXiv 2412.01818v1)"
    hcols = ["VQAv2", "GQA", "VizWiz", "SQA-IMG", "TextVQA", "POPE", "MME", "MMB", "MMB-CN", "MM-Vet"]
    emit_bullets(out, m1, "**H1, LLaVA-1.5-7B.**", "(FitPrune rows omitted.)", columns=hcols, paper=fv, table="H1 (LLaVA-1.5-7B)",
                 model="llava-1.5-7b", mme="perception", evidence="authors' project-page image (methods-1.md §6 H1)", vanilla_budget="576")
    emit_bullets(out, m1, "**H2, LLaVA-NeXT-7B (2880 tokens).**", "**H3", columns=hcols, paper=fv, table="H2 (LLaVA-NeXT-7B)",
                 model="llava-next-7b", mme="perception", evidence="authors' project-page image (methods-1.md §6 H2)", vanilla_budget="2880")
    # H1 "0 tokens" row is a method-less bullet: literal
    add(out, fv, "H1 (LLaVA-1.5-7B)", "llava-1.5-7b", "0 visual tokens", "0", "", hcols + ["Avg"],
        [40.73, 37.38, 45.36, 63.06, 41.43, 47.21, 719.10, 20.02, 17.70, 11.30, 56.50], mme="perception",
        evidence="authors' project-page image (methods-1.md §6 H1)", note="row printed without a method name ('0 tokens')")
    # H3 video (Acc/Score per dataset)
    lines = m1.splitlines()
    i = next(n for n, line in enumerate(lines) if "**H3, Video-LLaVA**" in line)
    budget = None
    vids = ["TGIF", "MSVD", "MSRVTT", "ActivityNet"]
    for line in lines[i + 1:]:
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
                pairs_line, method, budget_v, avgs = m.group(2), m.group(1), budget, (float(m.group(3)), float(m.group(4)))
        if pairs_line is None:
            continue
        pairs = [p.strip() for p in pairs_line.split(",")]
        assert len(pairs) == 4, line
        for name, pair in zip(vids, pairs):
            acc, score = (float(x) for x in pair.split("/"))
            for kind, v in (("acc", acc), ("score", score)):
                out.append(dict(paper=fv, table="H3 (Video-LLaVA)", model="video-llava-7b", benchmark=f"{name} {kind}",
                                method=method, method_key=method_key(method), budget=budget_v, setting="", value=v,
                                metric="GPT-judged accuracy, %" if kind == "acc" else "GPT-judged score (0-5)",
                                evidence="authors' project-page image (methods-1.md §6 H3)", note=""))
        if avgs:
            for bench, v, metric in (("RelAcc", avgs[0], "relative accuracy (Acc), %"), ("RelAcc (score)", avgs[1], "relative GPT score, %")):
                out.append(dict(paper=fv, table="H3 (Video-LLaVA)", model="video-llava-7b", benchmark=bench, method=method,
                                method_key=method_key(method), budget=budget_v, setting="", value=v, metric=metric,
                                evidence="authors' project-page image (methods-1.md §6 H3)", note=""))

    # ---- methods-2.md ----
    hp = "HiPrune (arXiv 2508.00553, ACL version)"
    emit_table(out, md_table(m2, "**Table 2 — LLaVA-1.5-7B**"), paper=hp, table="Table 2", model="llava-1.5-7b", mme="total",
               evidence="paper text (methods-2.md §2.6)", note="† = reproduced by the HiPrune authors; other rows copied from VScan")
    dart = "DART (arXiv 2502.11494, EMNLP version)"
    emit_table(out, md_table(m2, "**Table 1 — LLaVA-1.5-7B** (GQA, MMB, MMB-CN, MME, POPE, SQA, VQAv2, TextVQA, VizWiz, OCRBench"),
               paper=dart, table="Table 1", model="llava-1.5-7b", mme="total",
               evidence="paper text via OCR conversion; DART rows re-verified (methods-2.md §4.6)",
               note="other 128/64 baseline rows illegible in the source; not shipped")
    for method, budget, v in (("FiCoCo-V", "64", 91.5), ("SparseVLM", "64", 84.6), ("PDrop", "64", 78.1), ("HiRED", "64", 87.0),
                              ("PruMerge", "64", 87.4)):
        add(out, dart, "Table 1", "llava-1.5-7b", method, budget, "", ["Avg"], [v], evidence="paper text via OCR conversion (methods-2.md §4.6)",
            note="only the average is legible in the source")
    add(out, dart, "Table 1", "llava-1.5-7b", "DART† (applied during training)", "192", "", ["Avg"], [100.4], evidence="paper text (methods-2.md §4.6)")
    add(out, dart, "Table 1", "llava-1.5-7b", "DART† (applied during training)", "64", "", ["Avg"], [97.2], evidence="paper text (methods-2.md §4.6)")
    d3 = ["GQA", "MMB", "MMB-CN", "MME", "POPE", "SQA", "VQAv2", "TextVQA", "VizWiz", "OCR"]
    ev = "paper text (methods-2.md §4.6)"
    add(out, dart, "Table 3", "llava-next-7b", "vanilla", "", "unpruned", d3, [64.2, 67.4, 60.6, 1851, 86.5, 70.1, 81.8, 64.9, 57.6, 517], evidence=ev,
        note="the unpruned token count is not given in the source")
    add(out, dart, "Table 3", "llava-next-7b", "DART", "320", "", d3 + ["Avg"], [61.7, 65.3, 58.2, 1710, 84.1, 68.4, 79.1, 58.7, 56.1, 406, 93.9], evidence=ev)
    for method, v in (("FastV", 86.4), ("HiRED", 91.8), ("PruMerge", 79.9), ("SparseVLM", 85.9), ("PDrop", 86.8), ("MustDrop", 90.4),
                      ("FasterVLM", 89.8), ("GlobalCom2", 90.3)):
        add(out, dart, "Table 3", "llava-next-7b", method, "320", "", ["Avg"], [v], evidence=ev)
    q4 = ["GQA", "MMB", "MMB-CN", "MME", "POPE", "SQA", "TextVQA"]
    add(out, dart, "Table 4", "qwen2-vl-7b", "vanilla", "", "unpruned", q4, [62.2, 80.5, 81.2, 2317, 86.1, 84.7, 82.1], evidence=ev)
    for setting, vals, avg, fast in (("reduction 66.7 %", [60.2, 78.9, 78.0, 2245, 83.9, 81.4, 80.5], 97.0, 94.0),
                                     ("reduction 77.8 %", [58.5, 77.3, 77.1, 2175, 82.1, 79.6, 75.3], 94.3, 91.0),
                                     ("reduction 88.9 %", [55.5, 72.0, 71.7, 2052, 77.9, 77.6, 61.8], 87.5, 84.0)):
        add(out, dart, "Table 4", "qwen2-vl-7b", "DART", "", setting, q4 + ["Avg"], vals + [avg], evidence=ev)
        add(out, dart, "Table 4", "qwen2-vl-7b", "FastV", "", setting, ["Avg"], [fast], evidence=ev)
    for method, vals in (("vanilla", [47.0, 3.4, 70.2, 3.9, 57.3, 3.5, 58.2, 3.6]), ("FastV", [45.2, 3.1, 71.0, 3.9, 55.0, 3.5, 57.1, 3.5]),
                         ("DART", [46.3, 3.4, 71.0, 4.0, 56.7, 3.6, 58.0, 3.7])):
        for (name, kind), v in zip([(n, k) for n in ("TGIF", "MSVD", "MSRVTT", "Video avg") for k in ("acc", "score")], vals):
            out.append(dict(paper=dart, table="Table 6", model="video-llava-7b", benchmark=f"{name} {kind}", method=method,
                            method_key=method_key(method), budget="", setting="unpruned" if method == "vanilla" else "50 % retained",
                            value=v, metric="GPT-judged accuracy, %" if kind == "acc" else "GPT-judged score (0-5)", evidence=ev, note=""))
    tops = ["GQA", "SQA", "TextVQA", "POPE", "MME", "MMB", "MMB-CN", "MMVet"]
    ev_tops = "third-party re-implementation: TOPS App. Table 11 (methods-2.md §1.6, §4.6) [2ND]"
    add(out, "TOPS (third party)", "App. Table 11", "llava-1.5-7b", "vanilla", "576", "", tops, [61.9, 69.5, 58.2, 85.9, 1506.5, 64.7, 58.1, 31.3], mme="perception", evidence=ev_tops)
    for budget, vals, rel in (("128", [59.4, 68.6, 55.9, 87.0, 1405.1, 61.5, 54.8, 30.6], 96.7), ("64", [57.5, 68.0, 54.5, 85.5, 1334.7, 60.1, 52.3, 28.1], 93.7),
                              ("32", [54.9, 68.6, 52.9, 81.5, 1284.9, 57.6, 49.1, 26.3], 90.2)):
        add(out, "TOPS (third party)", "App. Table 11", "llava-1.5-7b", "DivPrune", budget, "", tops + ["Rel"], vals + [rel], mme="perception", evidence=ev_tops,
            note="re-implementation by another paper, not DivPrune's own numbers")
    add(out, "TOPS (third party)", "App. Table 11", "llava-1.5-7b", "DART", "32", "", tops + ["Rel"], [52.9, 69.3, 52.2, 69.1, 1273.3, 58.5, 50.0, 25.0, 87.3],
        mme="perception", evidence=ev_tops, note="re-implementation by another paper")
    for budget, rel in (("128", 95.7), ("64", 91.3)):
        add(out, "TOPS (third party)", "App. Table 11", "llava-1.5-7b", "DART", budget, "", ["Rel"], [rel], evidence=ev_tops, note="re-implementation by another paper")
    # DivPrune paper (secondary summary; no token budget)
    dcols = ["COCO CIDEr", "GQA EM", "MMBench", "OK-VQA", "POPE F1", "SEED"]
    ev_dp = "paper-note summary of arXiv 2503.02175 Table 1 (methods-2.md §1.6) [2ND]"
    for method, vals in (("vanilla", [1.10, 61.96, 64.09, 53.39, 85.84, 66.17]), ("DivPrune", [0.96, 56.85, 59.19, 46.98, 86.02, 59.47]),
                         ("FastV", [0.06, 38.73, 20.62, 18.32, 32.84, 35.69])):
        for col, v in zip(dcols, vals):
            out.append(dict(paper="DivPrune (arXiv 2503.02175)", table="Table 1", model="llava-1.5-7b", benchmark=col, method=method,
                            method_key=method_key(method), budget="", setting="unpruned" if method == "vanilla" else "~84-90 % pruning, same TFLOP budget",
                            value=v, metric="lmms-eval metric", evidence=ev_dp, note="unverified secondary source"))
    # HiPrune Table 3/9 NeXT
    n9 = ["MMB", "MMB-CN", "POPE", "SQA", "VizWiz"]
    ev = "paper text (methods-2.md §2.6)"
    add(out, hp, "Table 3/9", "llava-next-7b", "vanilla", "", "unpruned", n9, [67.4, 60.6, 86.5, 70.1, 57.6], evidence=ev,
        note="the unpruned token count is not given in the source")
    for budget, vals, rel in (("640", [67.0, 59.3, 85.3, 68.0, 59.9], 99.4), ("320", [65.3, 57.0, 78.9, 67.3, 59.9], 96.4), ("160", [59.8, 50.7, 67.7, 68.7, 57.2], 89.6)):
        add(out, hp, "Table 3/9", "llava-next-7b", "HiPrune", budget, "", n9 + ["Avg"], vals + [rel], evidence=ev)
    for i, budget in enumerate(("640", "320", "160")):
        for method, rels in (("HiPrune++", (99.7, 98.4, 94.4)), ("VisionZip", (98.1, 94.8, 90.5)), ("VisPruner", (98.1, 96.4, 92.0)),
                             ("PDrop", (94.3, 81.6, None)), ("SparseVLM", (96.5, 93.2, None)), ("FastV", (92.7, 78.1, None))):
            if rels[i] is not None:
                add(out, hp, "Table 3/9", "llava-next-7b", method, budget, "", ["Avg"], [rels[i]], evidence=ev,
                    note="" if method == "HiPrune++" else "baseline numbers taken from CDPruner")
    for budget, vals, rel in (("640", [65.0, 56.4, 85.4, 67.9, 58.6], 97.4), ("320", [63.9, 55.2, 83.0, 67.7, 57.4], 95.6), ("160", [62.5, 52.3, 78.4, 68.3, 57.5], 93.4)):
        add(out, hp, "Table 3/9", "llava-next-7b", "DivPrune", budget, "", n9 + ["Avg"], vals + [rel], evidence=ev,
            note="numbers taken from CDPruner (re-implementation)")
    # HiPrune Table 4, Qwen2.5-VL-3B (retain ratios, no token count)
    add(out, hp, "Table 4", "qwen2.5-vl-3b", "vanilla", "", "unpruned", n9, [77.3, 73.0, 87.0, 80.4, 68.3], evidence=ev)
    t4 = {"FastV": [("33.3", [74.4, 70.6, 85.0, 79.3, 66.9], 97.4), ("22.2", [72.4, 69.2, 82.7, 79.6, 66.2], 95.9), ("11.1", [56.2, 60.7, 73.3, 79.3, 63.8], 86.4)],
          "VisionZip": [("33.3", [74.9, 69.8, 85.4, 80.1, 67.1], 97.7), ("22.2", [73.5, 67.4, 84.6, 80.0, 66.3], 96.2), ("11.1", [67.8, 63.3, 80.2, 79.5, 62.8], 91.5)],
          "HiPrune": [("33.3", [75.9, 71.4, 85.9, 79.4, 68.4], 98.7), ("22.2", [73.7, 69.1, 84.9, 80.2, 67.1], 97.1), ("11.1", [69.6, 65.4, 80.4, 79.1, 64.6], 93.0)],
          "HiPrune++": [("33.3", [76.0, 71.1, 85.9, 79.9, 68.0], 98.7), ("22.2", [74.2, 69.4, 84.4, 80.2, 66.7], 97.1), ("11.1", [70.5, 64.7, 79.9, 79.4, 64.5], 93.0)]}
    for method, entries in t4.items():
        for ratio, vals, rel in entries:
            add(out, hp, "Table 4", "qwen2.5-vl-3b", method, "", f"retain {ratio} %", n9 + ["Avg"], vals + [rel], evidence=ev,
                note="all reproduced by the HiPrune authors")
    q8 = ["GQA", "MMB", "MMB-CN", "MME", "POPE", "SQA", "TextVQA", "VizWiz"]
    add(out, hp, "Table 8", "qwen2.5-vl-7b", "vanilla", "", "unpruned", q8, [60.5, 83.2, 80.1, 2331, 86.2, 87.4, 83.1, 70.4], evidence=ev)
    for ratio, vals in (("33.3", [58.9, 82.6, 79.5, 2297, 85.1, 87.0, 78.5, 69.2]), ("22.2", [57.2, 80.2, 77.6, 2168, 84.0, 85.7, 74.1, 68.6]),
                        ("11.1", [52.5, 76.1, 73.5, 1998, 80.2, 82.8, 62.6, 66.4])):
        add(out, hp, "Table 8", "qwen2.5-vl-7b", "HiPrune", "", f"retain {ratio} %", q8, vals, evidence=ev)
    # LearnPruner (secondary)
    lp = "LearnPruner (arXiv 2604.23950v1)"
    ev_lp = "paper-note summary (methods-2.md §3.7) [2ND]; per-benchmark tables not available"
    for model, budget, method, v in (("llava-1.5-7b", "128", "LearnPruner", 98.5), ("llava-1.5-7b", "128", "VisPruner", 97.3), ("llava-1.5-7b", "128", "TwigVLM", 99.0),
                                     ("llava-1.5-7b", "64", "LearnPruner", 96.9), ("llava-1.5-7b", "64", "TwigVLM", 96.0),
                                     ("llava-1.5-7b", "32", "LearnPruner", 94.8), ("llava-1.5-7b", "32", "VisPruner", 89.7), ("llava-1.5-7b", "32", "DivPrune", 90.5),
                                     ("llava-next-7b", "160", "LearnPruner", 94.0), ("llava-next-7b", "160", "VisionZip‡", 93.3),
                                     ("qwen2.5-vl-7b", "142", "LearnPruner", 94.1), ("qwen2.5-vl-7b", "142", "FastV", 71.4)):
        add(out, lp, "main results", model, method, budget, "", ["Avg"], [v], evidence=ev_lp, note="unverified secondary source; benchmark list unknown")
    return out


def main(argv: list[str]) -> int:
    ref = Path(argv[1] if len(argv) > 1 else "/work/shared/reference")
    rows = build(ref)
    writer = csv.DictWriter(sys.stdout, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        r = dict(r)
        v = r["value"]
        r["value"] = f"{v:g}" if isinstance(v, float) else v
        writer.writerow(r)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
