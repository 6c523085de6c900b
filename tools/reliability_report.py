#!/usr/bin/env python3
"""The reliability figures of docs/reliability.md: runs the kill-and-resume suite (test/faults)
and the bad-input suite (test/bad_inputs), or reads the JUnit XML of such a run, and prints a
table per stage (bad-input cases, kills landed, resumes equal to the uninterrupted run), stamped
with the date, the command, and the commit, machine and torch it ran with.

    tools/venv/bin/python tools/reliability_report.py                   # run both suites
    tools/venv/bin/python tools/reliability_report.py --markdown docs/reliability.md
    tools/venv/bin/python tools/reliability_report.py --junit results.xml

With --markdown the table replaces the text between ``<!-- reliability:begin -->`` and
``<!-- reliability:end -->`` of that file.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

from mtbi.bench.report import replace_marked_section
from mtbi.bench.stamp import table_stamp

ROOT = Path(__file__).resolve().parents[1]
SUITES = ("test/faults", "test/bad_inputs")


def run_suites(junit: Path) -> None:
    """Run both suites with pytest (every tier: the kill-and-resume suite is in the recipe tier),
    writing their JUnit XML to ``junit``."""
    command = [sys.executable, "-m", "pytest", "-q", "--all", *SUITES, f"--junitxml={junit}"]
    subprocess.run(command, cwd=ROOT, check=False)


def read_junit(junit: Path) -> list[dict]:
    """One dict per test case: name, outcome (passed, failed, skipped) and recorded properties."""
    cases = []
    for case in ET.parse(junit).iter("testcase"):
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            if case.find(tag) is not None:
                outcome = "skipped" if tag == "skipped" else "failed"
        properties = {p.get("name"): p.get("value") for p in case.iter("property")}
        cases.append({"file": case.get("classname", ""), "name": case.get("name", ""), "outcome": outcome,
                      "seconds": float(case.get("time", 0)), "properties": properties})
    return cases


def summarize(cases: list[dict]) -> str:
    """The markdown table and totals."""
    rows: dict[int, dict] = defaultdict(lambda: {"cases": 0, "passed": 0, "kills": None, "resumed": None,
                                                 "files": None})
    for case in cases:
        if "bad_inputs" in case["file"]:
            match = re.match(r"test_stage(\d)", case["name"])
            if match:
                row = rows[int(match.group(1))]
                row["cases"] += 1
                row["passed"] += case["outcome"] == "passed"
        elif "faults" in case["file"] and "stage" in case["properties"]:
            row = rows[int(case["properties"]["stage"])]
            row["kills"] = int(case["properties"]["kills"])
            row["files"] = int(case["properties"]["files_compared"])
            row["resumed"] = case["outcome"] == "passed"
        elif "faults" in case["file"]:
            match = re.search(r"\[(\d)\]", case["name"])
            if match:  # a failed fault test records no properties
                rows[int(match.group(1))]["resumed"] = case["outcome"] == "passed"
    lines = ["| stage | bad-input cases passed | SIGKILLs landed | resumed outputs equal to the uninterrupted run |",
             "|---|---|---|---|"]
    for stage in sorted(rows):
        row = rows[stage]
        resumed = "-" if row["resumed"] is None else (f"yes ({row['files']} files)" if row["resumed"] else "NO")
        lines.append(f"| {stage} | {row['passed']} / {row['cases']} | "
                     f"{'-' if row['kills'] is None else row['kills']} | {resumed} |")
    total_cases = sum(r["cases"] for r in rows.values())
    total_passed = sum(r["passed"] for r in rows.values())
    kills = sum(r["kills"] or 0 for r in rows.values())
    resumed = sum(1 for r in rows.values() if r["resumed"])
    killed_stages = sum(1 for r in rows.values() if r["resumed"] is not None)
    lines.append("")
    lines.append(f"{total_passed} of {total_cases} bad-input cases passed; {kills} SIGKILLs landed in "
                 f"{killed_stages} stages, and {resumed} of {killed_stages} stages resumed to the "
                 "uninterrupted run's outputs.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--junit", type=Path, help="JUnit XML of a run of both suites (default: run them now)")
    parser.add_argument("--markdown", type=Path, help="write the table between the reliability markers of this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        junit = args.junit
        if junit is None:
            junit = Path(tmp) / "reliability.xml"
            run_suites(junit)
        table = summarize(read_junit(junit))
    table = table_stamp(" ".join(["tools/reliability_report.py", *sys.argv[1:]]), []) + "\n\n" + table
    print(table)
    if args.markdown:
        replace_marked_section(args.markdown, "reliability", table)


if __name__ == "__main__":
    main()
