"""``prunebench report``, ``prunebench plot`` and ``prunebench compare``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prunebench.core import PruneBenchError

FORMATS = {"md": ".md", "csv": ".csv", "latex": ".tex"}

REPORT_EPILOG = """\
rows: the unpruned baseline, then method x budget (failed and infeasible cells are listed, not dropped);
columns: each task's score, RelAcc (mean of score / unpruned score, %), agreement with the unpruned answers (%),
latency (median time to first token, "TTFT (ms)", where recorded, else LLM prefill; a prefill time in a TTFT
column is marked *; § marks a latency whose p90/median exceeds 1.5 or that was measured at a CPU load above 1.5
per core), FLOPs (counted, else analytic, marked †; GFLOPs or TFLOPs, whichever suits the table) and KV cache
(MB or GB). A legend under every table (the LaTeX caption) defines the columns and marks; a run of a model with
random weights (the tiny test models) says so. Bold / underline are ranked per budget on the printed values, a
cost only among values of one kind. A planned cell without a valid record is listed as missing.
a run folder contributes the cells of its plan.json (the sweep as last planned); --all adds older records.
published numbers print as the papers print them; in LaTeX each paper table gets its own table.

examples:
  prunebench report results/toy                                  Markdown to the terminal
  prunebench report results/toy --format latex -o table.tex      booktabs table, best in bold, second underlined
  prunebench report results/toy --format md,csv,latex -o out/leaderboard
                                                                 out/leaderboard.md, .csv and .tex
  prunebench report results/mine results/reference               two runs in one table (rows keep their run)
  prunebench report results/llava --with-published --published-source VisPruner
                                                                 beside the numbers VisPruner's paper prints
  prunebench report results/llava --format latex --with-published --bib refs.bib -o table.tex
                                                                 tables plus the BibTeX entries they cite
"""

PLOT_EPILOG = """\
figures (PNG and PDF, sized for a two-column paper, no text under 7 pt; one colour, marker and dash per method
in every figure and every invocation, from a colour-blind-safe palette; the star is the unpruned model's):
  budget_curves      score per task and RelAcc versus budget; the unpruned model as a dotted line; × = a
                     failed or infeasible budget
  pareto_prefill_ms  RelAcc versus median time to first token (else prefill latency), a bar to the p90, the
                     Pareto front; an outlier (a loaded machine) sits at the axis edge with its value
  pareto_tflops      RelAcc versus FLOPs (GFLOPs or TFLOPs, as the leaderboard prints them), with the Pareto front
  pareto_kv_mb       RelAcc versus KV-cache size (MB or GB), with the Pareto front
                     (each Pareto point is labelled with its budget)
  relacc_heatmap     method x budget grids of RelAcc: the mean, then one per task
several runs: one line style and marker fill per run. published numbers (--with-published) are hollow
markers labelled with their source, e.g. "FastV (VisPruner T1)"; the figures show one published table (the
one sharing most methods with the runs, or --published-source TEXT; --published-source all shows every one).

examples:
  prunebench plot results/toy                         figures in results/toy/plots/
  prunebench plot results/mine results/reference -o figs --with-published
  prunebench plot results/toy --width single          every figure one column (3.5 in) wide
"""


COMPARE_EPILOG = """\
exit status: 0 when every cell is in both runs and each has the same status, task scores, RelAcc and agreement
(within --score-tolerance); 1 otherwise. Differences in tokens, FLOPs, KV bytes and latency are shown but do not
change the exit status.

examples:
  prunebench compare results/reference/demo results/demo      the committed reference against a fresh demo run
  prunebench compare runA runB --latency-tolerance 0.2 --json
"""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folder(s) written by `prunebench run` (several are combined)")
    p.add_argument("--with-published", action="store_true", help="add the seed papers' published numbers (marked 'published: <paper> <table>'; not ranked)")
    p.add_argument(
        "--published-model",
        metavar="MODEL",
        help="which model's published numbers: llava-1.5-7b, llava-next-7b, qwen2.5-vl-7b, video-llava-7b, ... "
        "or a hub id such as llava-hf/llava-1.5-7b-hf (default: the runs' model if the papers report it, "
        "else llava-1.5-7b)",
    )
    p.add_argument(
        "--published-source",
        metavar="TEXT",
        help="keep only published tables whose paper/table name contains TEXT, e.g. 'VisPruner' or 'DART' "
        "('all': every table, also in plots, which otherwise show one)",
    )
    p.add_argument(
        "--all", dest="all_cells", action="store_true", help="every record in RUN/cells/, also those of earlier sweeps that RUN/plan.json no longer lists"
    )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    r = subparsers.add_parser(
        "report",
        help="leaderboard of one or more runs (Markdown, CSV, LaTeX)",
        description="Leaderboard of finished runs: method x budget rows with accuracy, RelAcc, agreement and cost.",
        epilog=REPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(r)
    r.add_argument("--format", default="md", metavar="FMT", help="md, csv or latex, or a comma list such as md,csv,latex (default md)")
    r.add_argument(
        "-o", "--output", metavar="FILE", help="write here instead of the terminal; with several formats, FILE's suffix is replaced by .md / .csv / .tex"
    )
    r.add_argument("--standalone", action="store_true", help="LaTeX: a whole document (compiles with pdflatex as it is)")
    r.add_argument("--caption", help="LaTeX caption as plain text, escaped (default: describes the columns and the bold/underline convention)")
    r.add_argument("--caption-latex", metavar="TEX", help="LaTeX caption used as it is (math, \\cite, ...)")
    r.add_argument("--bib", metavar="FILE", help="also write the BibTeX entries the table cites (methods and published sources) to FILE")
    r.set_defaults(func=cmd_report)

    p = subparsers.add_parser(
        "plot",
        help="paper figures of one or more runs (PNG and PDF)",
        description="Budget curves, accuracy-versus-cost Pareto plots and a RelAcc heat map of finished runs.",
        epilog=PLOT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(p)
    p.add_argument("-o", "--output", metavar="DIR", help="folder for the figures (default: RUN/plots of the first RUN)")
    p.add_argument("--formats", default="png,pdf", help="comma list of file formats (default png,pdf)")
    p.add_argument("--dpi", type=int, default=300, help="resolution of raster formats (default 300)")
    p.add_argument(
        "--width", metavar="W", help="figure width: single (3.5 in), double (7 in) or inches (default: budget curves and heat map double, Pareto plots single)"
    )
    p.set_defaults(func=cmd_plot)

    c = subparsers.add_parser(
        "compare",
        help="what differs between two runs, cell by cell (exit 1 if accuracy differs)",
        description="Match the cells of two run folders (model, method and parameters, budget, budget mode and scope, "
        "suite, limit, seed, preprocessing, layout; not the keys, which also cover code versions) and show per cell what "
        "differs: status, each task's score, RelAcc, agreement, visual tokens, FLOPs, KV bytes, and latency beyond a relative "
        "tolerance; then the cells found in only one run.",
        epilog=COMPARE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("run_a", metavar="RUN_A", help="run folder (e.g. results/reference/demo)")
    c.add_argument("run_b", metavar="RUN_B", help="run folder to compare with RUN_A (e.g. results/demo)")
    c.add_argument(
        "--latency-tolerance",
        type=float,
        default=0.5,
        metavar="R",
        help="relative latency difference still counted as equal (default 0.5 = ±50%%: timings follow the machine's load)",
    )
    c.add_argument(
        "--score-tolerance",
        type=float,
        default=0.0,
        metavar="D",
        help="absolute task-score difference still counted as equal (default 0; RelAcc and agreement: 100 x D points)",
    )
    c.add_argument("--all", dest="all_cells", action="store_true", help="every record in cells/, also those plan.json no longer lists")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.set_defaults(func=cmd_compare)


def _leaderboard(args: argparse.Namespace):
    from prunebench.report import leaderboard

    source = None if args.published_source == "all" else args.published_source
    df = leaderboard(args.runs, with_published=args.with_published, published_model=args.published_model, published_source=source, all_cells=args.all_cells)
    if df.empty:
        raise PruneBenchError(
            f"no finished cells in {', '.join(args.runs)}; run `prunebench run` first (or check that the folder is the run folder, holding cells/)"
        )
    return df


def render(df, fmt: str, *, standalone: bool = False, caption: str | None = None, caption_latex: str | None = None) -> str:
    from prunebench.report import to_csv, to_latex, to_markdown

    if fmt == "md":
        return to_markdown(df)
    if fmt == "csv":
        return to_csv(df)
    return to_latex(df, standalone=standalone, caption=caption, caption_latex=caption_latex)


def cmd_report(args: argparse.Namespace) -> int:
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise PruneBenchError(f"unknown --format {','.join(unknown) or args.format!r}; choose from md, csv, latex (comma list allowed)")
    df = _leaderboard(args)
    for fmt in formats:
        text = render(df, fmt, standalone=args.standalone, caption=args.caption, caption_latex=args.caption_latex)
        if args.output:
            out = Path(args.output)
            if len(formats) > 1 or not out.suffix:
                out = out.with_suffix(FORMATS[fmt]) if out.suffix else out.parent / (out.name + FORMATS[fmt])
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text)
            print(f"wrote {out}", file=sys.stderr)
        else:
            sys.stdout.write(text)
            if len(formats) > 1:
                sys.stdout.write("\n")
    if args.bib:
        from prunebench.report.latex import bibtex, cited_keys

        out = Path(args.bib)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(bibtex(cited_keys(df)))
        print(f"wrote {out}", file=sys.stderr)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from prunebench.report.plots import plot_all

    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    width = args.width
    if width is not None and width not in ("single", "double"):
        try:
            width = float(width)
        except ValueError:
            raise PruneBenchError(f"--width {args.width!r}: use single, double or a width in inches such as 5.5") from None
    df = _leaderboard(args)
    outdir = Path(args.output) if args.output else Path(args.runs[0]) / "plots"
    try:
        paths = plot_all(
            df, outdir, formats=formats, dpi=args.dpi, width=width, published_source="all" if args.published_source == "all" else args.published_source
        )
    except ValueError as exc:
        raise PruneBenchError(str(exc)) from None
    for path in paths:
        print(path)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    import json

    from prunebench.report.compare import compare_runs

    for run in (args.run_a, args.run_b):
        if not (Path(run) / "cells").is_dir():
            raise PruneBenchError(f"{run} is not a run folder (no {Path(run) / 'cells'}/); pass folders written by `prunebench run`")
    if args.latency_tolerance < 0 or args.score_tolerance < 0:
        raise PruneBenchError("--latency-tolerance and --score-tolerance must be >= 0 (e.g. --latency-tolerance 0.5)")
    result = compare_runs(args.run_a, args.run_b, score_tolerance=args.score_tolerance, latency_tolerance=args.latency_tolerance, all_cells=args.all_cells)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        sys.stdout.write(result.to_text())
    return 0 if result.equal_accuracy else 1
