"""``qa-lightning-report RUN_DIR [RUN_DIR ...] [--output FILE] [--split test]``.

One run directory: rebuild its ``report.html`` from its files. A multirun directory (with
``sweep_summary.json``): rebuild its ``sweep_report.html``. Two or more run directories: a
comparison page (the first is the baseline), ``comparison.html`` unless ``--output``. Input
errors print one line to stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from qa_lightning.errors import QALightningError
from qa_lightning.report.compare import write_comparison
from qa_lightning.report.run_report import write_report
from qa_lightning.report.sweep import SUMMARY_FILE, write_sweep_report

PROG = "qa-lightning-report"
EXIT_INPUT_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Self-contained HTML report of a run, a comparison of runs, or a sweep.",
    )
    parser.add_argument(
        "run_dirs", metavar="RUN_DIR", nargs="+", help="run (or multirun) directory"
    )
    parser.add_argument("--output", help="where to write the page")
    parser.add_argument(
        "--split", default="validation", choices=["validation", "test"], help="evaluated split"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; prints the page written."""
    args = build_parser().parse_args(argv)
    dirs = [Path(d) for d in args.run_dirs]
    try:
        if len(dirs) > 1:
            path = write_comparison(dirs, args.output or "comparison.html")
        elif (dirs[0] / SUMMARY_FILE).exists() and not (dirs[0] / "metrics.json").exists():
            path = write_sweep_report(dirs[0])
        else:
            path = write_report(dirs[0], args.output, split=args.split)
    except (QALightningError, OSError, ValueError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
