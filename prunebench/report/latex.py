"""LaTeX leaderboard: booktabs tables, one block per budget, best value per column in bold, second underlined.

The fragment needs ``\\usepackage{booktabs}`` and ``graphicx`` (a table wider than the text is shrunk to fit) and
natbib (or biblatex with natbib=true) for ``\\citep``; the keys are in ``data/references.bib``
(:func:`bibtex` returns the entries a table cites). ``to_latex(df, standalone=True)`` wraps the tables in a
document that compiles as it is.

With published numbers of several papers, each paper table gets its own ``table`` (its own columns, its own
baseline), after the measured one: one 30-column table of mostly empty cells helps nobody. Columns that no row
of a table fills are left out. Published cells print as the paper prints them.
"""

from __future__ import annotations

import re
from importlib import resources

import pandas as pd

from prunebench.report.leaderboard import (
    ANALYTIC_MARK,
    LATENCY_MARK,
    MEASURED,
    METRIC_COLUMNS,
    PREFILL_MARK,
    budget_text,
    cell_text,
    citation_key,
    column_title,
    cost_mark,
    cost_notes,
    for_display,
    legend,
    printed_text,
    random_weights_note,
    ranks,
    task_columns,
    value_decimals,
)
from prunebench.report.published import short_source, source_citation
from prunebench.store import BASELINE_METHOD

_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "†": r"\textsuperscript{\dag}",
    "‡": r"\textsuperscript{\ddag}",
    "—": "--",
    "–": "--",
    "×": r"$\times$",
    "±": r"$\pm$",
    "§": r"\S{}",
}
_SPECIAL_RE = re.compile("|".join(re.escape(k) for k in _SPECIAL))
_MARKS = {ANALYTIC_MARK: r"\textsuperscript{\dag}", PREFILL_MARK: r"$^{*}$", LATENCY_MARK: r"\textsuperscript{\S}"}


def escape(text: str) -> str:
    """Escape LaTeX special characters (and the few non-ASCII symbols the papers use)."""
    return _SPECIAL_RE.sub(lambda m: _SPECIAL[m.group(0)], str(text))


def _short_source(source: str) -> str:
    return source.removeprefix("published: ")


def _method_cell(row: pd.Series) -> str:
    text = escape(row["label"])
    key = citation_key(row["method"]) if row["method"] != BASELINE_METHOD else ""
    if key:
        text += f"~\\citep{{{key}}}"
    return text


def _block_title(row: pd.Series, several_modes: bool = False) -> str:
    if row["source"] != MEASURED:
        head = f"Published: {_short_source(row['source'])}"
        if row["method"] == BASELINE_METHOD:
            return f"{head}, unpruned" + ("" if pd.isna(row["budget"]) else f" ({int(row['budget'])} tokens)")
        return head if pd.isna(row["budget"]) else f"{head}, {int(row['budget'])} tokens"
    if row["method"] == BASELINE_METHOD or pd.isna(row["budget"]):
        return "Unpruned"
    mode = f" (budget mode: {row['budget_mode']})" if several_modes and row["budget_mode"] else ""
    return f"{int(row['budget'])} visual tokens{mode}"


def table_parts(df: pd.DataFrame, split: bool | None = None) -> list[pd.DataFrame]:
    """The row sets of the tables: one table, or (``split``, default: more than one published source) the measured
    rows and then one part per published source."""
    sources = [s for s in dict.fromkeys(df["source"]) if s != MEASURED]
    if split is None:
        split = len(sources) > 1
    if not split:
        return [df]
    parts = [df[df["source"] == MEASURED]] if (df["source"] == MEASURED).any() else []
    return parts + [df[df["source"] == s] for s in sources]


def to_latex(
    df: pd.DataFrame,
    *,
    caption: str | None = None,
    caption_latex: str | None = None,
    label: str = "tab:leaderboard",
    standalone: bool = False,
    split: bool | None = None,
) -> str:
    """The leaderboard as booktabs ``table`` environments (``standalone=True``: a whole compilable document).

    ``caption`` is plain text (escaped); ``caption_latex`` is used as it is (math, \\cite, ...). ``split``: one
    table per published source (default when there are several). Bold / underline are ranked on the whole
    leaderboard, at the precision printed.
    """
    df = for_display(df)
    rank = ranks(df)
    decimals = value_decimals(df)
    parts = table_parts(df, split)
    bodies = []
    for i, part in enumerate(parts):
        published_only = not (part["source"] == MEASURED).any()
        if caption_latex is not None and i == 0:
            text = caption_latex
        elif caption and i == 0:
            text = escape(caption)
        elif published_only:
            text = _published_caption(part)
        else:
            text = _default_caption(part)
        suffix = "" if i == 0 else "-" + _slug(short_source(part["source"].iloc[0]))
        bodies.append(_table(part, df, rank, decimals, text, label + suffix))
    body = "\n".join(bodies)
    if not standalone:
        return body
    # The cited entries travel inside the document (filecontents), so pdflatex + bibtex resolve every \citep.
    keys = cited_keys(df)
    bib = ("\\begin{filecontents*}[overwrite]{prunebench-references.bib}\n" + bibtex(keys) + "\\end{filecontents*}\n") if keys else ""
    tail = "\\bibliographystyle{plainnat}\n\\bibliography{prunebench-references}\n" if keys else ""
    return (
        bib + "\\documentclass{article}\n\\usepackage[T1]{fontenc}\n\\usepackage[utf8]{inputenc}\n\\usepackage{booktabs}\n\\usepackage{graphicx}\n"
        "\\usepackage[numbers]{natbib}\n\\usepackage[margin=1cm,landscape]{geometry}\n\\begin{document}\n" + body + tail + "\\end{document}\n"
    )


def _table(part: pd.DataFrame, full: pd.DataFrame, rank: pd.DataFrame, decimals: dict[str, int], caption: str, label: str) -> str:
    value_cols = [c for c in task_columns(full) + METRIC_COLUMNS if part[c].notna().any()]
    multi_model = part["model"].nunique() > 1
    several_modes = part.loc[part["source"] == MEASURED, "budget_mode"].replace("", pd.NA).dropna().nunique() > 1
    head_cols = ["Method", "Budget"]  # with several models, each block's title names its model
    titles = [escape(column_title(full, c)) for c in value_cols]
    ncols = len(head_cols) + len(value_cols)
    spec = "l" * len(head_cols) + "r" * len(value_cols)
    arrows = [r"$\downarrow$" if c in ("prefill_ms", "tflops", "kv_mb") else r"$\uparrow$" for c in value_cols]
    published_only = not (part["source"] == MEASURED).any()
    if published_only:
        arrows = ["" for _ in value_cols]  # quoted numbers are not ranked; nothing to read the arrows against
    lines = [
        "% prunebench leaderboard; needs \\usepackage{booktabs,graphicx} (and natbib for \\citep)",
        r"\begin{table*}[t]",
        r"\centering",
        r"\small",
        r"\setlength{\tabcolsep}{3pt}",
        f"\\caption{{{caption}}}",
        f"\\label{{{label}}}",
        r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%  shrink to the text width only if wider",
        f"\\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(head_cols + [f"{t} {a}".strip() for t, a in zip(titles, arrows)]) + r" \\",
    ]
    block = None
    for idx, row in part.iterrows():
        title = (row["source"], row["model"], _block_title(row, several_modes))
        if title != block:
            lines.append(r"\midrule")
            model = f" ({escape(row['model'])})" if multi_model and row["model"] else ""
            lines.append(f"\\multicolumn{{{ncols}}}{{l}}{{\\textit{{{escape(title[2])}{model}}}}} \\\\")
            block = title
        cells = [_method_cell(row), escape(budget_text(row))]
        if row["status"] in ("failed", "infeasible", "missing"):
            cells.append(f"\\multicolumn{{{len(value_cols)}}}{{c}}{{\\textit{{{row['status']}}}}}")
        else:
            printed = printed_text(row)
            for col in value_cols:
                text = cell_text(row, col, decimals[col], printed)
                if text == "—":
                    cells.append("--")
                    continue
                text = escape(text)
                r = rank.at[idx, col] if idx in rank.index else 0
                if r == 1:
                    text = f"\\textbf{{{text}}}"
                elif r == 2:
                    text = f"\\underline{{{text}}}"
                mark = cost_mark(full, row, col)
                cells.append(text + "".join(_MARKS.get(m, "") for m in mark))
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}"]
    notes = cost_notes(part)
    if notes:
        lines.append(r"\par\smallskip{\footnotesize " + r" \quad ".join(_note_latex(n) for n in notes) + "}")
    lines.append(r"\end{table*}")
    return "\n".join(lines) + "\n"


def _note_latex(note: str) -> str:
    mark = note[0]
    return _MARKS.get(mark, escape(mark)) + escape(note[1:])


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def _default_caption(df: pd.DataFrame) -> str:
    models = ", ".join(sorted(m for m in df["model"].unique() if m))
    text = (
        f"Accuracy and cost of vision-token pruning{' on ' + escape(models) if models else ''}. "
        r"Per budget, the best value of each column is in "
        r"\textbf{bold} and the second best \underline{underlined}; $\uparrow$ higher is better, "
        r"$\downarrow$ lower is better."
    )
    if (df["source"] != MEASURED).any():
        text += " Published rows are quoted from the papers (their own baselines and metric conventions) and not ranked."
    note = random_weights_note(df, hint=False)
    if note:
        text = r"\textbf{" + escape(note) + "} " + text
    parts = [escape(p).replace(r"2\textasciicircum{}20", r"$2^{20}$") for p in legend(df) if not p.startswith("Published rows")]
    return text + " " + " ".join(parts)


def _published_caption(part: pd.DataFrame) -> str:
    source = part["source"].iloc[0]
    key = source_citation(source)
    cite = f"~\\citep{{{key}}}" if key else ""
    model = escape(part["model"].iloc[0])
    text = (
        f"Published numbers on {model} as printed in {escape(_short_source(source))}{cite}, quoted, not re-run: "
        "that paper's own unpruned baseline, benchmark splits and metric conventions, not comparable cell by cell "
        "with measured rows or other papers."
    )
    if part[["tflops", "kv_mb", "prefill_ms"]].notna().any().any():
        text += " Cost columns follow the paper's convention (published.csv, column metric), not the harness's."
    return text


def cited_keys(df: pd.DataFrame) -> list[str]:
    """BibTeX keys the tables of ``df`` cite (methods and published sources), in first-use order."""
    keys = [citation_key(m) for m in df["method"] if m != BASELINE_METHOD]
    keys += [source_citation(s) for s in df["source"] if s != MEASURED]
    return [k for k in dict.fromkeys(keys) if k]


def bibtex(keys: list[str] | None = None) -> str:
    """The entries of ``data/references.bib`` for ``keys`` (all entries when None); unknown keys are listed in a
    comment so a missing entry is visible rather than a silent ``[?]``."""
    text = resources.files("prunebench.report").joinpath("data/references.bib").read_text(encoding="utf-8")
    entries = {m.group(1): m.group(0).strip() for m in re.finditer(r"@\w+\{([^,]+),.*?\n\}", text, re.S)}
    if keys is None:
        return "\n\n".join(entries.values()) + "\n"
    missing = [k for k in keys if k not in entries]
    out = [entries[k] for k in keys if k in entries]
    if missing:
        out.append("% no entry shipped for: " + ", ".join(missing))
    return "\n\n".join(out) + "\n"
