#!/usr/bin/env python3
"""Where a kernel's warps wait, per CUDA source line, from Nsight Compute's source page.

Reads one or two CSV files written by
    ncu -i REPORT --page source --csv --print-source cuda
(a report taken with --import-source yes --section SourceCounters --section WarpStateStats, the
kernel built with -lineinfo, as this project's CUDA code is). With one file it prints the source
lines with the most warp-stall samples; with two (a kernel and a variant of it, for example the
fused SSD without and with its gate epilogue, scripts/gpu-ssd-fused.sh gate-source) it prints
each file's total and the lines whose samples differ most between them, matched by line number
and text. Columns are found by name; when one is missing the header is printed so that the
names can be checked against this Nsight Compute version.

    scripts/ncu_source_lines.py [--top N] A.csv [B.csv]
"""
import argparse
import csv
import sys


def pick(header, *needles):
    """The first column whose name contains every needle (case-insensitive), or None."""
    for i, name in enumerate(header):
        low = name.lower()
        if all(n in low for n in needles):
            return i
    return None


def number(text):
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0


def read(path):
    """{(line, source): samples} and the total of the sampled column."""
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    # Nsight Compute may print a few lines before the table: the header is the first row that
    # names a stall-sampling column.
    start = next((i for i, r in enumerate(rows) if pick(r, "stall", "sampl") is not None), None)
    if start is None:
        sys.exit(f"{path}: no warp-stall sampling column; first rows: {rows[:3]}")
    header = rows[start]
    samples = pick(header, "stall", "sampl", "all")
    if samples is None:
        samples = pick(header, "stall", "sampl")
    line = pick(header, "line")
    if line is None:
        line = pick(header, "#")
    source = pick(header, "source")
    if line is None or source is None:
        sys.exit(f"{path}: no line or source column in {header}")
    out = {}
    for r in rows[start + 1:]:
        if len(r) <= max(samples, line, source):
            continue
        key = (r[line].strip(), r[source].strip()[:100])
        out[key] = out.get(key, 0.0) + number(r[samples])
    return out, sum(out.values()), header[samples]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    if len(args.files) > 2:
        sys.exit("one or two CSV files")
    tables = [read(p) for p in args.files]
    for path, (_, total, column) in zip(args.files, tables):
        print(f"{path}: {total:.0f} samples ({column})")
    if len(tables) == 1:
        lines, total, _ = tables[0]
        for (ln, src), s in sorted(lines.items(), key=lambda kv: -kv[1])[: args.top]:
            print(f"{s:9.0f} {100 * s / max(total, 1):5.1f}%  {ln:>5}  {src}")
        return
    (a, ta, _), (b, tb, _) = tables
    diff = {k: b.get(k, 0.0) - a.get(k, 0.0) for k in set(a) | set(b)}
    print(f"second - first: {tb - ta:+.0f} samples; lines by the largest change:")
    for (ln, src), d in sorted(diff.items(), key=lambda kv: -abs(kv[1]))[: args.top]:
        print(f"{d:+9.0f}  {a.get((ln, src), 0.0):9.0f} -> {b.get((ln, src), 0.0):9.0f}  {ln:>5}  {src}")


if __name__ == "__main__":
    main()
