#!/usr/bin/env python3
"""Executed instructions and warp-stall samples per CUDA source line, from Nsight Compute's SASS page.

Nsight Compute 2025's CUDA source page (--print-source cuda) can come without counters; its SASS
page (--print-source sass) has them per instruction but no source lines. This tool takes the SASS
page of one kernel,
    ncu -i REPORT --page source --csv --print-source sass > k.csv   (may be gzipped)
compiles the same source here to a cubin (scripts/cubin.py: this project's flags, -lineinfo; no
GPU needed), finds the kernel by its name, checks that the two instruction streams have the same
opcodes (else the source or the compiler differs from what ran, and it stops), and sums the
SASS page's "Instructions Executed" and stall samples per line of the source file. An instruction
inlined from a header or another function is counted on the line of the source file that it came
from (the innermost such line nvdisasm -gi reports).

    scripts/ncu_sass_lines.py k.csv src/ops/cuda/ssd_fused_p64.cu \
        --lines-of src/ops/cuda/ssd_fused_kernel.cuh [--top 40] [--opcodes]

--lines-of names the file whose lines are shown with their source text (default: the compiled
file itself), for a kernel defined in a header that the compiled file instantiates.

--opcodes prints the executed instructions per opcode (with modifiers) as well; --against B.csv
(another kernel of the same source, for example the fused SSD with its gate epilogue against
without: scripts/gpu-ssd-fused.sh gate-source) prints the lines whose counts differ most.
"""
import argparse
import collections
import csv
import gzip
import os
import re
import sys
import tempfile

from cubin import add_toolkit_args, cubin_for, functions, instructions


def read_csv(path):
    """(kernel name, header, rows) of an ncu SASS page."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    kernel = next((r[1] for r in rows if r[0] == "Kernel Name" and len(r) > 1), None)
    start = next((i for i, r in enumerate(rows) if "Instructions Executed" in r), None)
    if kernel is None or start is None:
        sys.exit(f"{path}: not an ncu SASS page (no Kernel Name row or Instructions Executed column)")
    header = rows[start]
    return kernel, header, [r for r in rows[start + 1:] if len(r) == len(header)]


def normal(name):
    """A kernel name in a form both ncu and c++filt reduce to: no return type, namespaces or
    parameter list, template arguments without casts, bools as 0/1, no spaces."""
    for anon in ("(anonymous namespace)", "<unnamed>"):
        name = name.replace(anon, "anon")
    name = name.replace("(bool)", "").replace("(int)", "").replace("true", "1").replace("false", "0")
    name = re.sub(r"^void\s+", "", name)
    name = name[: name.rindex("(")] if "(" in name else name
    head, _, args = name.partition("<")
    return (head.split("::")[-1] + ("<" + args if args else "")).replace(" ", "")


def sass_of(funcs, kernel):
    """instructions() of the kernel among a cubin's functions (cubin.functions), found by name."""
    want = normal(kernel)
    hits = [f for f, (d, _) in funcs.items() if normal(d) == want]
    if len(hits) != 1:
        sys.exit(f"{len(hits)} kernels in the cubin match {want}")
    return instructions(funcs[hits[0]][1])


def opcode(text):
    return re.sub(r"^@!?U?P\w+\s+", "", text.strip()).split(" ")[0].rstrip(";")


def per_line(path, funcs):
    """The kernel's name and its executed instructions, stall samples and opcodes per (file, line)."""
    kernel, header, rows = read_csv(path)
    col = {h: i for i, h in enumerate(header)}
    executed, samples = col["Instructions Executed"], col.get("Warp Stall Sampling (All Samples)")
    source = col["Source"]
    local = sass_of(funcs, kernel)
    if len(local) != len(rows) or any(o != opcode(r[source]) for (o, _), r in zip(local, rows)):
        sys.exit(f"{path}: the SASS compiled here ({len(local)} instructions) differs from the "
                 f"profiled kernel's ({len(rows)}): another source revision or compiler")
    num = lambda s: float(s.replace(",", "")) if s.strip() not in ("", "-") else 0.0
    per, stalls = collections.Counter(), collections.Counter()
    ops = collections.defaultdict(collections.Counter)
    for (op, where), r in zip(local, rows):
        n = num(r[executed])
        per[where] += n
        stalls[where] += num(r[samples]) if samples is not None else 0.0
        ops[where][op] += n
    return kernel, per, stalls, ops


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", help="ncu --page source --csv --print-source sass (.csv or .csv.gz)")
    ap.add_argument("source", help="the .cu file the kernel was built from (compiled here)")
    ap.add_argument("--against", help="a second kernel's SASS page (same source): the lines that differ")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--opcodes", action="store_true")
    ap.add_argument("--cubin", help="a cubin already compiled from the source (skips nvcc)")
    ap.add_argument("--lines-of", help="the file whose lines to show (default: the source)")
    add_toolkit_args(ap)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:  # one disassembly for both pages
        funcs = functions(args.nvdisasm, cubin_for(args, args.source, tmp, args.cubin), "-gi")
    tables = [per_line(p, funcs) for p in [args.csv] + ([args.against] if args.against else [])]
    lines_of = args.lines_of or args.source
    base = os.path.basename(lines_of)
    text = open(lines_of).read().split("\n")
    src = lambda f, ln: text[ln - 1].strip()[:60] if f == base and ln <= len(text) else ""
    for kernel, per, stalls, _ in tables:
        print(f"{kernel}\n  {sum(per.values()):,.0f} warp instructions executed, "
              f"{sum(stalls.values()):,.0f} stall samples")
    if args.against:
        (_, a, sa, _), (_, b, sb, _) = tables
        keys = set(a) | set(b)
        print(f"{'file':>14} {'line':>5} {'executed':>21} {'stall samples':>17} | source (second − first, by |Δ executed|)")
        for k in sorted(keys, key=lambda k: -abs(b[k] - a[k]))[: args.top]:
            print(f"{k[0][:14]:>14} {k[1]:5} {a[k] / 1e6:8.2f}M → {b[k] / 1e6:7.2f}M "
                  f"{sa[k]:7.0f} → {sb[k]:7.0f} | {src(*k)}")
        return
    _, per, stalls, ops = tables[0]
    total, total_s = sum(per.values()), max(sum(stalls.values()), 1.0)
    print(f"{'file':>14} {'line':>5} {'executed':>9} {'share':>6} {'stalls':>6}  top opcodes | source")
    for (f, ln), n in per.most_common(args.top):
        top = " ".join(f"{o}:{100 * c / n:.0f}%" for o, c in ops[(f, ln)].most_common(3)) if n else ""
        print(f"{f[:14]:>14} {ln:5} {n / 1e6:8.2f}M {100 * n / total:5.1f}% "
              f"{100 * stalls[(f, ln)] / total_s:5.1f}%  {top} | {src(f, ln)}")
    if args.opcodes:
        by_opcode = sum(ops.values(), collections.Counter())
        print("executed instructions per opcode:")
        for o, c in by_opcode.most_common(40):
            print(f"  {o:28} {c / 1e6:8.2f}M {100 * c / total:5.1f}%")


if __name__ == "__main__":
    main()
