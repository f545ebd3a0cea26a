#!/usr/bin/env python3
"""Static SASS of a kernel per CUDA source line: instruction counts and their opcodes.

Needs no GPU: compiles one .cu file to an sm_90a cubin (nvcc -cubin -lineinfo, this project's
flags) and disassembles it with nvdisasm (part of the CUDA toolkit; where a toolkit lacks it,
`pip download nvidia-cuda-nvdisasm` holds one). For one kernel it prints, per source line of the
chosen file, the instructions compiled from it (every inlined copy counted, once per line of
SASS, not per execution); with --against it prints both kernels' counts side by side, for example
the fused SSD with and without its gate epilogue:

    scripts/sass_lines.py src/ops/cuda/ssd_fused_p64.cu \\
        --lines-of src/ops/cuda/ssd_fused_kernel.cuh \\
        --kernel 'ssd_fused_kernel<__nv_bfloat16, 64, 128, 2, true, false>' \\
        --against 'ssd_fused_kernel<__nv_bfloat16, 64, 128, 2, false, false>' --lines 1060-1130

Kernels are matched on their demangled names (a substring). Lines from other files (headers, the
toolkit's intrinsics) are summed per file and line at the end, largest first. The counts say what
an edit changed in the code the compiler emits (for example a SiLU's five instructions against
eight), not how long it runs: that takes a profile (scripts/gpu-ssd-fused.sh source).
"""
import argparse
import collections
import os
import sys
import tempfile

from cubin import add_toolkit_args, cubin_for, functions, instructions


def count(lines):
    """{(file, line): Counter(opcode)} over a function's SASS (opcodes without their modifiers)."""
    per = collections.defaultdict(collections.Counter)
    for op, where in instructions(lines):
        per[where][op.split(".")[0]] += 1
    return per


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", help="the .cu file (compiled here) or a .cubin")
    ap.add_argument("--kernel", required=True, help="substring of the demangled kernel name")
    ap.add_argument("--against", help="a second kernel, printed beside the first")
    ap.add_argument("--lines", help="LO-HI: only these lines of the source file")
    ap.add_argument("--lines-of", help="the file whose lines to show (default: the .cu file), for "
                    "a kernel defined in a header that the compiled file instantiates")
    add_toolkit_args(ap)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        given = args.source if args.source.endswith(".cubin") else None
        funcs = functions(args.nvdisasm, cubin_for(args, args.source, tmp, given), "-g")

    def find(sub):
        hits = [f for f, (d, _) in funcs.items() if sub.replace(" ", "") in d.replace(" ", "")]
        if len(hits) != 1:
            some = "\n  ".join(sorted(d for d, _ in funcs.values())[:40])
            sys.exit(f"{len(hits)} kernels match {sub!r}; kernels:\n  {some}")
        return count(funcs[hits[0]][1])

    a = find(args.kernel)
    b = find(args.against) if args.against else None
    lines_of = args.lines_of or (None if args.source.endswith(".cubin") else args.source)
    base = os.path.basename(lines_of) if lines_of else None
    lo, hi = (int(x) for x in args.lines.split("-")) if args.lines else (0, 1 << 30)
    total = lambda per: sum(sum(c.values()) for c in per.values())
    print(f"{args.kernel}: {total(a)} instructions" + (f"; {args.against}: {total(b)}" if b else ""))
    src = open(lines_of).read().split("\n") if base else []
    keys = set(a) | set(b or {})
    mine = sorted(k for k in keys if k[0] == base and lo <= k[1] <= hi)
    for k in mine:
        n = sum(a[k].values()) if k in a else 0
        ops = " ".join(f"{o}:{c}" for o, c in a[k].most_common(6)) if k in a else ""
        side = f"{sum(b[k].values()) if k in b else 0:6} " if b else ""
        text = src[k[1] - 1].strip()[:60] if k[1] - 1 < len(src) else ""
        print(f"{k[1]:6} {n:6} {side} {ops:48} | {text}")
    other = sorted((k for k in keys if k[0] != base), key=lambda k: -sum(a[k].values()) if k in a else 0)
    print("other files (header, line: instructions" + (", against" if b else "") + ", opcodes):")
    for k in other[:20]:
        n = sum(a[k].values()) if k in a else 0
        side = f" {sum(b[k].values()) if k in b else 0}" if b else ""
        print(f"  {k[0]}:{k[1]}: {n}{side}  {' '.join(f'{o}:{c}' for o, c in a[k].most_common(5))}")


if __name__ == "__main__":
    main()
