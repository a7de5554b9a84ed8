#!/usr/bin/env python3
"""Summarises `ncu --csv --metrics ...` output: one row per (kernel, grid,
block) in order of first launch, with the launch count and the mean of each
metric. Used on the GPU machine after, e.g.,

  ncu --profile-from-start off --clock-control none --cache-control none \
      --metrics gpu__time_duration.sum,dram__bytes_read.sum --csv \
      .gpu/bin/attention_bench --profile_steps=8 ... > ncu.csv
  python3 tools/gpu/ncu_summary.py ncu.csv

(attention_bench's --profile_steps brackets real Quest steps and dense calls
with cudaProfilerStart/Stop). ncu runs kernels one at a time, so the times
are each kernel alone: their sum against the step's time in the same run is
what the launches between them cost.
"""

import collections
import csv
import re
import sys


def short_name(name: str) -> str:
    # "void ns::Kernel<T, 128, ...>(Params)" -> "Kernel<T, 128, ...>"
    name = re.sub(r"^void\s+", "", name)
    name = re.sub(r"\(.*\)$", "", name)
    name = re.sub(r"quest::ops::cuda::(\(anonymous namespace\)::)?", "", name)
    return name[:70]


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else "-"
    text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8", errors="replace").read()
    # ncu prints its own log lines (==PROF== ...) before the CSV.
    lines = [l for l in text.splitlines() if l.startswith('"')]
    if not lines:
        print("ncu_summary: no CSV rows")
        return 1
    launches = collections.OrderedDict()  # ID -> (key, {metric: value})
    units = {}
    for row in csv.DictReader(lines):
        key = (short_name(row.get("Kernel Name", "?")), row.get("Grid Size", "?"), row.get("Block Size", "?"))
        entry = launches.setdefault(row["ID"], (key, {}))
        try:
            value = float(row["Metric Value"].replace(",", ""))
        except ValueError:
            continue
        entry[1][row["Metric Name"]] = value
        units[row["Metric Name"]] = row.get("Metric Unit", "")
    groups = collections.OrderedDict()
    for key, metrics in launches.values():
        groups.setdefault(key, []).append(metrics)
    names = list(units)
    print("%-70s %-16s %-12s %5s  %s" % ("kernel", "grid", "block", "n",
                                          "  ".join("%s [%s]" % (m, units[m]) for m in names)))
    for (kernel, grid, block), runs in groups.items():
        means = []
        for m in names:
            vals = [r[m] for r in runs if m in r]
            means.append("%.4g" % (sum(vals) / len(vals)) if vals else "-")
        print("%-70s %-16s %-12s %5d  %s" % (kernel, grid, block, len(runs), "  ".join(means)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
