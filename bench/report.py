"""``edgefleet bench report``: rewrite the table of docs/benchmarks.md from the result files in docs/results.

The table is generated (edgefleet.bench.results), so a figure in the docs is always a file's figure, with the
commit, date and load of the run that produced it.
"""

from __future__ import annotations

import argparse

from edgefleet.bench.results import DOC, RESULTS_DIR, write_report


def main(args: argparse.Namespace, registered: list[str]) -> int:
    table = write_report(registered, results_dir=RESULTS_DIR, doc=DOC)
    print(table)
    print(f"wrote the table of {DOC}")
    return 0
