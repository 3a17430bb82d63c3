"""Leaderboards and paper figures derived from result stores.

    from prunebench.report import leaderboard, to_markdown
    df = leaderboard("results/NAME")                 # or a ResultStore, records, or a list of runs
    print(to_markdown(df))
    to_latex(df)                                     # booktabs, best in bold / second underlined per budget
    leaderboard(["results/mine", "results/reference"], with_published=True)   # several runs + paper numbers

Figures: :mod:`prunebench.report.plots`. Published numbers: :mod:`prunebench.report.published`.
"""

from prunebench.report.latex import to_latex
from prunebench.report.leaderboard import leaderboard, load_records, ranks, task_columns, to_csv, to_markdown

__all__ = ["leaderboard", "load_records", "ranks", "task_columns", "to_csv", "to_latex", "to_markdown"]
