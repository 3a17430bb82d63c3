"""Published numbers of the seed papers, shipped as data (``data/published.csv``) with their sources.

One CSV row per number: paper, table, model, benchmark, method (as printed), method_key (prunebench name;
``none`` = unpruned), budget (visual tokens, empty where the paper gives a ratio instead: see ``setting``),
value (the text the paper prints, so "31.30" keeps its trailing zero), metric (the convention, e.g. MME
perception vs total, or how a cost was measured), evidence (where the transcription comes from) and note.
``data/build_published.py`` regenerates the file from the project's reference transcriptions; it is the only
way the file changes.

Never mix rows of different papers without re-normalising: they use different unpruned baselines (MME total
1862 vs perception 1510.7, SQA 69.5 vs 66.8). The leaderboard keeps each paper's rows under its own source.

Where a published benchmark is the one an lmms-eval task measures (:data:`TASK_BENCHMARKS`), the published
value sits in that task's column, converted to the task's scale by moving the decimal point (GQA 61.9 becomes
0.619 beside lmms-eval's 0-1 exact match): the digits stay the paper's. Published cost numbers ("TFLOPs",
"KV (MB)", "Latency (ms)"/"(s)") fill the report's cost columns; each follows its paper's own convention
(stated in ``metric``), never the harness's.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from functools import lru_cache
from importlib import resources

import pandas as pd

from prunebench.core import PruneBenchError

RELACC_BENCHMARKS = ("RelAcc",)

# lmms-eval 0.7.3 task -> (published benchmark, published value / task score). The task's score is the first
# metric lmms-eval reports (what the runner records): exact match in 0-1 for gqa, scienceqa_img, textvqa_val,
# vqav2_val, seedbench (seed_image) and pope (pope_accuracy: papers print POPE F1 or accuracy, see the metric
# column); the sum of subtask scores for mme (mme_perception_score, so only tables printing MME perception
# correspond); percent for mmbench_en_dev and mmvet (GPT-judged). Differences of split (VQAv2 test-dev vs val,
# MMBench dev vs test) remain: the published numbers are references, not replications.
TASK_BENCHMARKS: dict[str, tuple[str, int]] = {
    "gqa": ("GQA", 100),
    "mme": ("MME (perception)", 1),
    "pope": ("POPE", 100),
    "scienceqa_img": ("SQA-IMG", 100),
    "textvqa_val": ("TextVQA", 100),
    "vqav2_val": ("VQAv2", 100),
    "mmbench_en_dev": ("MMBench", 1),
    "mmbench_cn_dev": ("MMBench-CN", 1),
    "seedbench": ("SEED-I", 100),
    "mmvet": ("MM-Vet", 1),
    "mmmu_val": ("MMMU", 100),
    "vizwiz_vqa_val": ("VizWiz", 100),
}

# Published cost benchmark -> (leaderboard column, leaderboard value / published value).
COST_BENCHMARKS: dict[str, tuple[str, int]] = {
    "TFLOPs": ("tflops", 1),
    "KV (MB)": ("kv_mb", 1),
    "Latency (ms)": ("prefill_ms", 1),
    "Latency (s)": ("prefill_ms", 1000),
}

# BibTeX keys (data/references.bib) of the papers the published rows come from, by the paper's name.
SOURCE_CITATIONS = {
    "FastV": "chen2024fastv",
    "SparseVLM": "zhang2025sparsevlm",
    "VisionZip": "yang2025visionzip",
    "VisPruner": "zhang2025vispruner",
    "FasterVLM": "zhang2024fastervlm",
    "HiPrune": "liu2025hiprune",
    "DART": "wen2025dart",
    "DivPrune": "alvar2025divprune",
    "LearnPruner": "takezoe2026learnpruner",
    "TwigVLM": "shao2025twigvlm",
}

SOURCE_PREFIX = "published: "


@lru_cache(maxsize=1)
def published_table() -> pd.DataFrame:
    """Every shipped published number (long format): ``value`` as a float, ``text`` as the paper prints it."""
    with resources.files("prunebench.report").joinpath("data/published.csv").open("r", encoding="utf-8") as handle:
        df = pd.read_csv(handle, dtype=str, keep_default_na=False)
    df["text"] = df["value"]
    df["value"] = df["value"].astype(float)
    df["budget"] = pd.to_numeric(df["budget"].replace("", None), errors="coerce").astype("Int64")
    return df


def published_models() -> list[str]:
    return sorted(published_table()["model"].unique())


# Hub ids (and the originals' checkpoints) of the models the papers report on -> the short names of the data.
MODEL_ALIASES = {
    "llava-hf/llava-1.5-7b-hf": "llava-1.5-7b",
    "liuhaotian/llava-v1.5-7b": "llava-1.5-7b",
    "llava-hf/llava-1.5-13b-hf": "llava-1.5-13b",
    "liuhaotian/llava-v1.5-13b": "llava-1.5-13b",
    "llava-hf/llava-v1.6-vicuna-7b-hf": "llava-next-7b",
    "liuhaotian/llava-v1.6-vicuna-7b": "llava-next-7b",
    "qwen/qwen2.5-vl-7b-instruct": "qwen2.5-vl-7b",
    "qwen/qwen2.5-vl-3b-instruct": "qwen2.5-vl-3b",
    "qwen/qwen2-vl-7b-instruct": "qwen2-vl-7b",
    "languagebind/video-llava-7b-hf": "video-llava-7b",
    "languagebind/video-llava-7b": "video-llava-7b",
}


def resolve_model(name: str) -> str | None:
    """The published-data name of ``name`` (a short name such as llava-1.5-7b, or a hub id), or None."""
    key = name.strip().lower()
    if key in published_models():
        return key
    return MODEL_ALIASES.get(key)


def source_label(paper: str, table: str) -> str:
    return f"{SOURCE_PREFIX}{paper} {table}"


def paper_name(source: str) -> str:
    """'published: VisPruner (arXiv 2412.01818v2+) Table 1' -> 'VisPruner'."""
    return source.removeprefix(SOURCE_PREFIX).split()[0]


def short_source(source: str) -> str:
    """A legend-sized name of a published source: 'VisPruner T1', 'FasterVLM H1', 'TOPS App. T11'."""
    text = source.removeprefix(SOURCE_PREFIX)
    name, _, rest = text.partition(" (")
    table = rest.partition(") ")[2] if rest else text[len(name) :]
    table = re.sub(r"\s*\([^)]*(LLaVA|Video)[^)]*\)", "", table)  # the model is named elsewhere
    table = re.sub(r"\bTable\s*", "T", table).strip()
    return f"{name} {table}".strip()


def source_citation(source: str) -> str:
    return SOURCE_CITATIONS.get(paper_name(source), "")


def _shift(text: str, digits: int) -> str:
    """``text`` with the decimal point moved ``digits`` places (right for positive): the printed digits stay."""
    return format(Decimal(text).scaleb(digits), "f")


def published_rows(model: str = "llava-1.5-7b", source: str | None = None, tasks: list[str] | tuple[str, ...] = ()) -> pd.DataFrame:
    """Published results for ``model`` as leaderboard rows (one per paper table x method x budget/setting).

    ``source``: keep only papers/tables whose "paper table" text contains it (case-insensitive). ``tasks``: the
    measured task columns; a benchmark that one of them measures (:data:`TASK_BENCHMARKS`) goes into that column
    on the task's scale. Each row's ``printed`` holds the verbatim text of its cells (JSON, column -> text).
    """
    table = published_table()
    known = published_models()
    resolved = resolve_model(model)
    if resolved is None:
        raise PruneBenchError(f"no published numbers for model {model!r}; shipped models: {', '.join(known)} (choose one with --published-model)")
    model = resolved
    sel = table[table["model"] == model]
    if source:
        text = (sel["paper"] + " " + sel["table"]).str.lower()
        sel = sel[text.str.contains(source.lower(), regex=False)]
        if sel.empty:
            papers = sorted((table[table["model"] == model]["paper"] + " " + table[table["model"] == model]["table"]).unique())
            raise PruneBenchError(f"no published table for {model!r} matches {source!r}; available: {'; '.join(papers)}")
    into_task = {bench: (task, factor) for task, (bench, factor) in TASK_BENCHMARKS.items() if task in tasks}
    rows = []
    keys = ["paper", "table", "method", "method_key", "budget", "setting"]
    for (paper, tab, method, key, budget, setting), group in sel.groupby(keys, dropna=False, sort=False):
        label = method if not setting else f"{method} ({setting})"
        row = {
            "run": "",
            "source": source_label(paper, tab),
            "model": model,
            "suite": "",
            "method": key,
            "label": label,
            "params": "",
            "budget": None if pd.isna(budget) else int(budget),
            "budget_mode": "",
            "status": "published",
            "error": "",
            "tflops_source": "published",
            "latency_source": "published",
        }
        printed = {}
        for bench, text in zip(group["benchmark"], group["text"]):
            if bench in RELACC_BENCHMARKS:
                column, factor = "relacc", 1
            elif bench in COST_BENCHMARKS:
                column, factor = COST_BENCHMARKS[bench]
            elif bench in into_task:
                task, scale = into_task[bench]
                column, factor = task, 1 / scale
            else:
                column, factor = bench, 1
            digits = round(math.log10(factor))
            row[column] = float(Decimal(text).scaleb(digits))
            printed[column] = _shift(text, digits) if digits else text
        row["printed"] = json.dumps(printed, ensure_ascii=False)
        rows.append(row)
    return pd.DataFrame.from_records(rows)
