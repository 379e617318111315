"""`personarag compare CONFIG`: several systems over the same candidates, one table and one plot.

Runs each system of the suite (resumably, each in OUT/<name>/) through the experiment runner,
then prints and writes OUT/compare.md, OUT/compare.json (every p-value, raw and Holm-corrected)
and OUT/compare.png (quality vs LLM cost). See `personarag.experiment.suite` for the config.
"""

from __future__ import annotations

import argparse
import sys

GROUP = None
NAME = "compare"
HELP = "compare rerankers over the same first-stage candidates: table with significance tests, quality-vs-cost plot"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG", help="suite config (YAML or JSON): dataset, systems, baseline, measures")
    parser.add_argument("--output-dir", metavar="OUT", help="replaces output_dir of the config")
    parser.add_argument("--overwrite", action="store_true", help="replace the results of a different run in OUT")


def run(args: argparse.Namespace) -> int:
    from personarag.experiment.suite import Suite

    suite = Suite.from_file(args.config, output_dir=args.output_dir)
    report = suite.run(overwrite=args.overwrite)
    sys.stdout.write(report.markdown)
    sys.stdout.write("wrote " + ", ".join(str(path) for path in report.files) + "\n")
    return 0
