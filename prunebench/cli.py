"""The ``prunebench`` command.

Each feature module contributes its subcommands through ``add_parser(subparsers)``, so the command line
grows with the package without one file that everybody edits.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from prunebench import __version__
from prunebench.core import PruneBenchError
from prunebench.store import os_error_fix

# module -> the feature it adds; a module that is not present in this installation is skipped
SUBCOMMAND_MODULES = (
    "prunebench.commands",  # list, check
    "prunebench.runner.cli",  # run, status
    "prunebench.report.cli",  # report, plot
    "prunebench.toy.cli",  # toy train / eval
    "prunebench.training",  # train learnpruner
    "prunebench.profile",  # profile (cost only: random weights from a shipped config)
)

EPILOG = """\
examples:
  prunebench list                                   methods, their stages, signals and defaults
  prunebench check fastv visionzip --model tiny-llava   run the conformance kit
  prunebench run --methods learnpruner,vispruner --budgets 32,64,128
                                                    sweep budgets on the built-in toy model and suite
  prunebench report results/NAME --format latex     leaderboard of a finished run
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prunebench",
        description="Benchmark vision-token pruning methods for vision-language models: one hook interface, one budget contract, one cost model.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"prunebench {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error instead of its one-line summary")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name or name.startswith(str(exc.name) + "."):
                continue
            raise
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except PruneBenchError as exc:
        if args.debug:
            raise
        print(f"prunebench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (OSError, UnicodeDecodeError, MemoryError) as exc:  # a full disk, a read-only folder, a file in the way: one line
        if args.debug:
            raise
        print(f"prunebench {args.command}: error: {_one_line(exc)} (the traceback: rerun with --debug)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished results are kept", file=sys.stderr)
        return 130


def _one_line(exc: BaseException) -> str:
    """An OSError as ``what: file; what to do``."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}; {os_error_fix(exc)}"
    if isinstance(exc, UnicodeDecodeError):
        return f"a file that should be text holds binary data ({exc.reason} at byte {exc.start}); move it aside or delete it"
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


if __name__ == "__main__":
    sys.exit(main())
