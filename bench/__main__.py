"""`make bench`: every benchmark, one table, each figure beside its same-run baseline, and the ratio.

The table is also written to bench/results/ (latest.md and a timestamped copy) so runs compare.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
import traceback
from datetime import datetime, timezone
from pathlib import Path

from bench.common import Row

MODULES = ("bench.core", "bench.points", "bench.issuance", "bench.notification", "bench.gateway")
RESULTS = Path(__file__).with_name("results")


def format_table(rows: list[Row]) -> str:
    lines = ["| benchmark | value | baseline | baseline value | ratio | goal | verdict | note |",
             "|---|---:|---|---:|---:|---:|---|---|"]
    for row in rows:
        ratio = row.ratio
        goal = "" if row.goal is None else f"≥ {row.goal:g}"
        verdict = "" if row.goal is None or math.isnan(ratio) else ("meets" if ratio >= row.goal else "SHORT")
        lines.append(f"| {row.name} | {row.value:,.1f} {row.unit} | {row.baseline_name} | {row.baseline_value:,.1f} |"
                     f" {ratio:.2f} | {goal} | {verdict} | {row.note} |")
    return "\n".join(lines)


def print_table(rows: list[Row]) -> None:
    print(format_table(rows))


def main(selected: list[str]) -> int:
    rows: list[Row] = []
    failed = []
    for name in selected or MODULES:
        if not importlib.util.find_spec(name):
            continue
        print(f"running {name} ...", file=sys.stderr, flush=True)
        try:
            rows += importlib.import_module(name).run()
        except Exception:
            traceback.print_exc()
            failed.append(name)
    table = format_table(rows)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    # latest.md is the last complete run; a run of some modules only gets its timestamped file.
    paths = [RESULTS / f"{stamp}{'' if not selected else '-partial'}.md"] + ([] if selected else [RESULTS / "latest.md"])
    for path in paths:
        path.write_text(f"# make bench, {stamp}\n\n{table}\n", "utf-8")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
