#!/usr/bin/env python3
"""Registers, spills and ptxas performance warnings of every kernel in one .cu file, no GPU needed.

Compiles the file for one architecture (default sm_90a) with this project's flags and
`-Xptxas -v`, and prints a row per kernel (demangled, anonymous namespaces and parameter lists
left out): registers a thread, spill stores and loads in bytes, stack frame, and ptxas's
"Potential Performance Loss" notes (for example C7518: wgmma instructions serialized). With
--against REV it compiles the same file as it is at git revision REV (that revision's src/ and
include/, exported to a temporary folder) and prints only the kernels whose figures differ,
before -> after; kernels that exist on one side only are listed as added or removed (where a
template parameter was added at the end, its first value, 0 or false, stands for the old kernel).

    scripts/ptxas_usage.py src/ops/cuda/ssd_fused_p64.cu --kernel '64, 128, 2'
    scripts/ptxas_usage.py src/ops/cuda/ssd_fused_p64.cu --against main

This is how a change to a kernel was checked for new spills and serialized warpgroup MMAs when no
GPU was lent (docs/ssd-fused-notes.md, v17 candidate). It says what the compiler allocated, not
how fast anything runs.
"""
import argparse
import os
import re
import subprocess
import sys
import tarfile
import tempfile

from cubin import ROOT, add_toolkit_args, compile_cubin, run


def blank():
    return {"regs": 0, "spill_st": 0, "spill_ld": 0, "stack": 0, "notes": []}


def compile_usage(nvcc, root, rel, arch, tmp):
    """{mangled kernel: {regs, spill_st, spill_ld, stack, notes}} from ptxas -v of root/rel."""
    r = compile_cubin(nvcc, root, os.path.join(root, rel), arch, os.path.join(tmp, "k.cubin"),
                      ("-Xptxas", "-v"))
    out, cur = {}, None
    for ln in (r.stdout + r.stderr).split("\n"):
        m = re.search(r"Compiling entry function '(\S+)'", ln)
        if m:
            cur = m.group(1)
            out[cur] = blank()
            continue
        m = re.search(r"Potential Performance Loss: (.*) in the function '(\S+)'", ln)
        if m:
            out.setdefault(m.group(2), blank())["notes"].append(m.group(1))
            continue
        if cur is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads",
                      ln)
        if m:
            out[cur]["stack"], out[cur]["spill_st"], out[cur]["spill_ld"] = map(int, m.groups())
        m = re.search(r"Used (\d+) registers", ln)
        if m:
            out[cur]["regs"] = int(m.group(1))
    return out


def short_names(usage):
    """{readable name: figures}; the mangled names differ between folders (anonymous namespaces)."""
    mangled = list(usage)
    names = run(["c++filt"], input="\n".join(mangled)).stdout.split("\n")
    out = {}
    for m, n in zip(mangled, names):
        n = n.replace("(anonymous namespace)::", "")
        n = re.sub(r"^void ", "", n)
        n = re.sub(r"\((?:[^()]|\([^()]*\))*\)$", "", n)  # the parameter list
        out[n] = usage[m]
    return out


def fmt(u):
    s = f"{u['regs']:4} regs, spills {u['spill_st']}/{u['spill_ld']} B, stack {u['stack']} B"
    if u["notes"]:
        s += "; " + "; ".join(sorted(set(n.split(" due to ")[0] for n in u["notes"])))
    return s


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", help="a .cu file of this repository (path from its root)")
    ap.add_argument("--against", metavar="REV", help="compare with the file at this git revision")
    ap.add_argument("--kernel", default="", help="only kernels whose name contains this")
    add_toolkit_args(ap, nvdisasm=False)
    args = ap.parse_args()
    root = ROOT
    rel = os.path.relpath(os.path.abspath(args.source), root)
    if rel.startswith(".."):
        sys.exit(f"{args.source}: not inside {root}")
    want = lambda name: args.kernel.replace(" ", "") in name.replace(" ", "")
    with tempfile.TemporaryDirectory() as tmp:
        now = short_names(compile_usage(args.nvcc, root, rel, args.arch, tmp))
        if not args.against:
            for name in sorted(filter(want, now)):
                print(f"{fmt(now[name])}  {name}")
            return
        rev = subprocess.run(["git", "-C", root, "rev-parse", "--verify", "-q",
                              args.against + "^{commit}"], capture_output=True, text=True)
        if rev.returncode != 0:
            sys.exit(f"--against {args.against}: not a git revision of {root}")
        old_root = os.path.join(tmp, "rev")
        os.mkdir(old_root)
        tar = os.path.join(tmp, "rev.tar")
        run(["git", "-C", root, "archive", "-o", tar, args.against, "src", "include"])
        with tarfile.open(tar) as t:
            t.extractall(old_root, filter="data")
        if not os.path.exists(os.path.join(old_root, rel)):
            sys.exit(f"{rel} does not exist at {args.against}")
        old = short_names(compile_usage(args.nvcc, old_root, rel, args.arch, tmp))
    # A template parameter added (or removed) at the end, e.g. `k<.., false>` -> `k<.., false, 0>`:
    # the kernel with the new parameter's first value is compared with the old one.
    drop_last = lambda name: re.sub(r", [^,<>]+>$", ">", name)
    for n in [n for n in now if n not in old]:
        if drop_last(n) in old and drop_last(n) not in now and n.endswith((", 0>", ", false>")):
            old[n] = old.pop(drop_last(n))
    for n in [n for n in old if n not in now]:
        if drop_last(n) in now and drop_last(n) not in old and n.endswith((", 0>", ", false>")):
            now[n] = now.pop(drop_last(n))
    names = sorted(n for n in set(now) | set(old) if want(n))
    changed = [n for n in names if now.get(n) != old.get(n)]
    for n in changed:
        if n not in old:
            print(f"{n}\n    added: {fmt(now[n])}")
        elif n not in now:
            print(f"{n}\n    removed (was {fmt(old[n])})")
        else:
            print(f"{n}\n    {fmt(old[n])}\n -> {fmt(now[n])}")
    print(f"{len(names)} kernels, {len(changed)} differ from {args.against}")


if __name__ == "__main__":
    main()
