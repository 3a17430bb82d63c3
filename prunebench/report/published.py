"""Published numbers of the seed papers, shipped as data (``data/published.csv``) with their sources.

One CSV row per number: paper, table, model, benchmark, method (as printed), method_key (prunebench name;
``none`` = unpruned), budget (visual tokens, empty where the paper gives a ratio instead: see ``setting``),
value, metric (the convention, e.g. MME perception vs total), evidence (where the transcription comes from) and
note. ``data/build_published.py`` regenerates the file from the project's reference transcriptions.

Never mix rows of different papers without re-normalising: they use different unpruned baselines (MME total
1862 vs perception 1510.7, SQA 69.5 vs 66.8). The leaderboard keeps each paper's rows under its own source.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import pandas as pd

from prunebench.core import PruneBenchError

RELACC_BENCHMARKS = ("RelAcc",)


@lru_cache(maxsize=1)
def published_table() -> pd.DataFrame:
    """Every shipped published number (long format)."""
    with resources.files("prunebench.report").joinpath("data/published.csv").open("r", encoding="utf-8") as handle:
        df = pd.read_csv(handle, dtype={"budget": "string", "setting": "string", "note": "string"}, keep_default_na=False, na_values=[""])
    df["budget"] = pd.to_numeric(df["budget"], errors="coerce").astype("Int64")
    df["setting"] = df["setting"].fillna("")
    df["note"] = df["note"].fillna("")
    return df


def published_models() -> list[str]:
    return sorted(published_table()["model"].unique())


# Hub ids (and the originals' checkpoints) of the models the papers report on -> the short names of the data.
MODEL_ALIASES = {
    "llava-hf/llava-1.5-7b-hf": "llava-1.5-7b", "liuhaotian/llava-v1.5-7b": "llava-1.5-7b",
    "llava-hf/llava-v1.6-vicuna-7b-hf": "llava-next-7b", "liuhaotian/llava-v1.6-vicuna-7b": "llava-next-7b",
    "qwen/qwen2.5-vl-7b-instruct": "qwen2.5-vl-7b", "qwen/qwen2.5-vl-3b-instruct": "qwen2.5-vl-3b",
    "qwen/qwen2-vl-7b-instruct": "qwen2-vl-7b", "languagebind/video-llava-7b-hf": "video-llava-7b",
    "languagebind/video-llava-7b": "video-llava-7b",
}


def resolve_model(name: str) -> str | None:
    """The published-data name of ``name`` (a short name such as llava-1.5-7b, or a hub id), or None."""
    key = name.strip().lower()
    if key in published_models():
        return key
    return MODEL_ALIASES.get(key)


def source_label(paper: str, table: str) -> str:
    return f"published: {paper} {table}"


def published_rows(model: str = "llava-1.5-7b", source: str | None = None) -> pd.DataFrame:
    """Published results for ``model`` as leaderboard rows (one per paper table x method x budget/setting).

    ``source``: keep only papers/tables whose "paper table" text contains it (case-insensitive).
    """
    table = published_table()
    known = published_models()
    resolved = resolve_model(model)
    if resolved is None:
        raise PruneBenchError(f"no published numbers for model {model!r}; shipped models: {', '.join(known)} "
                              "(choose one with --published-model)")
    model = resolved
    sel = table[table["model"] == model]
    if source:
        text = (sel["paper"] + " " + sel["table"]).str.lower()
        sel = sel[text.str.contains(source.lower(), regex=False)]
        if sel.empty:
            papers = sorted((table[table["model"] == model]["paper"] + " " + table[table["model"] == model]["table"]).unique())
            raise PruneBenchError(f"no published table for {model!r} matches {source!r}; available: {'; '.join(papers)}")
    rows = []
    keys = ["paper", "table", "method", "method_key", "budget", "setting"]
    for (paper, tab, method, key, budget, setting), group in sel.groupby(keys, dropna=False, sort=False):
        label = method if not setting else f"{method} ({setting})"
        row = {
            "run": "", "source": source_label(paper, tab), "model": model, "suite": "", "method": key, "label": label,
            "params": "", "budget": None if pd.isna(budget) else int(budget), "budget_mode": "", "status": "published",
            "error": "",
        }
        for bench, value in zip(group["benchmark"], group["value"]):
            if bench in RELACC_BENCHMARKS:
                row["relacc"] = float(value)
            else:
                row[bench] = float(value)
        rows.append(row)
    return pd.DataFrame.from_records(rows)
