"""LaTeX leaderboard: a booktabs table, one block per budget, best value per column in bold, second underlined.

The fragment needs ``\\usepackage{booktabs}`` and ``graphicx`` (a table wider than the text is shrunk to fit) (and natbib, or biblatex with natbib=true, for ``\\citep``);
``to_latex(df, standalone=True)`` wraps it in a document that compiles as it is.
"""

from __future__ import annotations

import math
import re

import pandas as pd

from prunebench.report.leaderboard import (
    COLUMN_TITLES,
    MEASURED,
    METRIC_COLUMNS,
    budget_text,
    citation_key,
    column_decimals,
    format_value,
    ranks,
    task_columns,
)
from prunebench.store import BASELINE_METHOD

_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
    "†": r"\textsuperscript{\dag}", "‡": r"\textsuperscript{\ddag}", "—": "--", "–": "--", "×": r"$\times$",
}
_SPECIAL_RE = re.compile("|".join(re.escape(k) for k in _SPECIAL))


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


def to_latex(df: pd.DataFrame, *, caption: str | None = None, label: str = "tab:leaderboard", standalone: bool = False) -> str:
    """The leaderboard as a booktabs ``table`` (``standalone=True``: a whole compilable document)."""
    tasks = task_columns(df)
    value_cols = tasks + METRIC_COLUMNS
    multi_model = df["model"].nunique() > 1
    several_modes = df.loc[df["source"] == MEASURED, "budget_mode"].replace("", pd.NA).dropna().nunique() > 1
    head_cols = ["Method", "Budget"]  # with several models, each block's title names its model
    titles = [escape(t) for t in tasks] + [escape(COLUMN_TITLES[c]) for c in METRIC_COLUMNS]
    ncols = len(head_cols) + len(value_cols)
    rank = ranks(df)
    decimals = {c: column_decimals(df[c], c) for c in value_cols}
    spec = "l" * len(head_cols) + "r" * len(value_cols)
    higher = r"$\uparrow$"
    lower = r"$\downarrow$"
    arrows = [higher] * len(tasks) + [higher if c in ("relacc", "agreement") else lower for c in METRIC_COLUMNS]

    lines = [
        "% prunebench leaderboard; needs \\usepackage{booktabs,graphicx} (and natbib for \\citep)",
        r"\begin{table*}[t]",
        r"\centering",
        r"\small",
        r"\setlength{\tabcolsep}{3pt}",
        f"\\caption{{{escape(caption) if caption else _default_caption(df)}}}",
        f"\\label{{{label}}}",
        r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%  shrink to the text width only if wider",
        f"\\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(head_cols + [f"{t} {a}" for t, a in zip(titles, arrows)]) + r" \\",
    ]
    block = None
    for idx, row in df.iterrows():
        title = (row["source"], row["model"], _block_title(row, several_modes))
        if title != block:
            lines.append(r"\midrule")
            model = f" ({escape(row['model'])})" if multi_model and row["model"] else ""
            lines.append(f"\\multicolumn{{{ncols}}}{{l}}{{\\textit{{{escape(title[2])}{model}}}}} \\\\")
            block = title
        cells = [_method_cell(row), escape(budget_text(row))]
        if row["status"] in ("failed", "infeasible"):
            note = row["status"]
            cells.append(f"\\multicolumn{{{len(value_cols)}}}{{c}}{{\\textit{{{note}}}}}")
        else:
            for col in value_cols:
                value = row[col]
                text = format_value(value, col, decimals[col])
                text = "--" if text == "—" else text
                if not (isinstance(value, float) and math.isnan(value)):
                    r = rank.at[idx, col]
                    if r == 1:
                        text = f"\\textbf{{{text}}}"
                    elif r == 2:
                        text = f"\\underline{{{text}}}"
                cells.append(text)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table*}"]
    body = "\n".join(lines) + "\n"
    if not standalone:
        return body
    return ("\\documentclass{article}\n\\usepackage[T1]{fontenc}\n\\usepackage[utf8]{inputenc}\n\\usepackage{booktabs}\n\\usepackage{graphicx}\n"
            "\\usepackage[numbers]{natbib}\n\\usepackage[margin=1cm,landscape]{geometry}\n\\begin{document}\n"
            + body + "\\end{document}\n")


def _default_caption(df: pd.DataFrame) -> str:
    models = ", ".join(sorted(m for m in df["model"].unique() if m))
    text = (f"Accuracy and cost of vision-token pruning{' on ' + escape(models) if models else ''}. "
            r"RelAcc = mean over tasks of score / unpruned score. Per budget, the best value of each column is in "
            r"\textbf{bold} and the second best \underline{underlined}; $\uparrow$ higher is better, "
            r"$\downarrow$ lower is better.")
    if (df["source"] != MEASURED).any():
        text += " Published rows are quoted from the papers (their own baselines and metric conventions) and not ranked."
    return text
