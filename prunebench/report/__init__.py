"""Leaderboards and paper figures derived from result stores.

    from prunebench.report import leaderboard, to_markdown
    df = leaderboard("results/NAME")                 # the cells of the run's plan.json (all_cells=True: every record)
    print(to_markdown(df))
    to_latex(df)                                     # booktabs, best in bold / second underlined per budget
    leaderboard(["results/mine", "results/reference"], with_published=True)   # several runs + paper numbers
    bibtex(cited_keys(df))                           # the BibTeX entries the tables cite

Figures: :mod:`prunebench.report.plots`. Published numbers: :mod:`prunebench.report.published`.
"""

from prunebench.report.latex import bibtex, cited_keys, to_latex
from prunebench.report.leaderboard import leaderboard, load_records, ranks, task_columns, to_csv, to_markdown

__all__ = ["bibtex", "cited_keys", "leaderboard", "load_records", "ranks", "task_columns", "to_csv", "to_latex", "to_markdown"]
