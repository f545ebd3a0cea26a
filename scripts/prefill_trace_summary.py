#!/usr/bin/env python3
"""Where a prefill pass's time goes, from a kernel_trace CSV (tools/kernel_trace; scripts/gpu-check.sh
trace with GPU_CHECK_PREFILL_LENS): the passes of a `duality bench` prefill run.

usage: prefill_trace_summary.py TRACE.csv LABEL [PASSES] [GAP_US]

Splits the trace into passes at idle gaps of at least GAP_US microseconds (default 200: the
host's upload of a pass's tokens and batch description; a pass itself has no such gap) and takes
the last PASSES of them (default 3). Per kind of kernel (name and grid size) it prints how many
run a pass, their mean duration (first block's start to last block's end), their summed duration
a pass, and their share of the pass's span by increments: a kernel's increment is how far its end
moves the latest end seen so far, and a pass's increments add up to its span, so they say which
kernels the pass waits for (a kernel beside another on a second stream may have none). Then the
pass's span and how much of it no kernel ran.
"""
import sys
from collections import defaultdict

from kernel_trace_summary import load, short


def split_passes(rows, gap_ns):
    """The rows in start order, cut where a kernel starts gap_ns or more after all before it ended."""
    passes, cur, busy_end = [], [], 0
    for r in sorted(rows, key=lambda r: r[0]):
        if cur and r[0] - busy_end >= gap_ns:
            passes.append(cur)
            cur = []
        cur.append(r)
        busy_end = max(busy_end, r[1])
    if cur:
        passes.append(cur)
    return passes


def main():
    path, label = sys.argv[1], sys.argv[2]
    n_pass = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    gap_ns = int(float(sys.argv[4]) * 1e3) if len(sys.argv) > 4 else 200_000
    passes = split_passes(load(path), gap_ns)
    # (bench runs a warmup pass and its timed ones: if the count looks short, GAP_US merged some.)
    print(f"{label}: {len(passes)} passes in the trace (gaps of {gap_ns / 1e3:.0f} us or more)")
    if len(passes) < n_pass:
        print(f"{label}: {len(passes)} passes in the trace, need {n_pass}")
        return 1
    passes = passes[-n_pass:]
    kinds = defaultdict(lambda: [0, 0.0, 0.0])  # count, duration, increment
    spans, idle = [], []
    for p in passes:
        p = sorted(p, key=lambda r: r[1])
        t0 = min(r[0] for r in p)
        frontier, idle_ns, busy_end = t0, 0, t0
        for start, end, name, grid, _ in sorted(p, key=lambda r: r[0]):
            if start > busy_end:
                idle_ns += start - busy_end
            busy_end = max(busy_end, end)
        for start, end, name, grid, _ in p:
            k = kinds[(name, grid)]
            k[0] += 1
            k[1] += end - start
            k[2] += max(0, end - frontier)
            frontier = max(frontier, end)
        spans.append(frontier - t0)
        idle.append(idle_ns)
    span = sum(spans) / n_pass
    print(f"the last {n_pass} passes: {', '.join(f'{s / 1e6:.3f}' for s in spans)} ms, "
          f"{sum(idle) / n_pass / 1e3:.1f} us a pass with no kernel running")
    print(f"{'kernel':58} {'grid':>6} {'/pass':>6} {'dur us':>8} {'sum us':>9} "
          f"{'incr us':>9} {'share':>6}")
    for key in sorted(kinds, key=lambda k: -kinds[k][2]):
        n, dur, inc = kinds[key]
        print(f"{short(key[0]):58} {key[1]:6d} {n / n_pass:6.1f} {dur / n / 1e3:8.2f} "
              f"{dur / n_pass / 1e3:9.1f} {inc / n_pass / 1e3:9.1f} {inc / n_pass / span:6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
