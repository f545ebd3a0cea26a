#!/usr/bin/env python3
"""Where a decode step's time goes, from a kernel_trace CSV (tools/kernel_trace; scripts/gpu-check.sh
trace): the greedy steps of a `duality bench` decode run, split at each step's argmax.

usage: kernel_trace_summary.py TRACE.csv LABEL [STEPS]

Takes the last STEPS steps (default 16) of the trace, each ending with the end of its argmax
kernel. Per kind of kernel (name and grid size) it prints how many run a step, their mean
duration (first block's start to last block's end: under programmatic launch a kernel starts
while the one in front still runs, so durations overlap), the mean lead (how long before the
end of the kernel in front, in end order, it started) and its share of the step's span: a
kernel's *increment* is how far its end moves the latest end seen so far, and the increments of a
step add up to its span (argmax end to argmax end), so they say which kernels the step waits for.
Then the mean period and how much of it no kernel ran.
"""
import csv
import sys
from collections import defaultdict


def load(path):
    rows = []
    with open(path) as f:
        for r in csv.DictReader(f):
            rows.append((int(r["start_ns"]), int(r["end_ns"]), r["name"], int(r["grid"]),
                         int(r["stream"])))
    rows.sort(key=lambda r: r[1])
    return rows


def short(name, width=58):
    # Drop namespaces, keep the template arguments (they tell the GEMV forms apart).
    head, sep, tail = name.partition("<")
    head = head.split("::")[-1]
    s = head + sep + tail.replace("duality::cuda::", "").replace("(anonymous namespace)::", "")
    return s if len(s) <= width else s[:width - 1] + "…"


def main():
    path, label = sys.argv[1], sys.argv[2]
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 16
    rows = load(path)
    ends = [i for i, r in enumerate(rows) if "argmax" in r[2]]
    if len(ends) < steps + 1:
        print(f"{label}: {len(ends)} argmax kernels, need {steps + 1}")
        return 1
    ends = ends[-(steps + 1):]
    kinds = defaultdict(lambda: [0, 0.0, 0.0, 0.0])  # count, duration, lead, increment
    order = {}
    periods, idle = [], []
    for s in range(steps):
        lo, hi = ends[s], ends[s + 1]
        t0 = rows[lo][1]
        frontier = t0
        busy_end = t0
        idle_ns = 0
        prev_end = t0
        for start, end, name, grid, _ in rows[lo + 1:hi + 1]:
            key = (name, grid)
            order.setdefault(key, len(order))
            k = kinds[key]
            k[0] += 1
            k[1] += end - start
            k[2] += prev_end - start
            k[3] += max(0, end - frontier)
            if start > busy_end:
                idle_ns += start - busy_end
            busy_end = max(busy_end, end)
            frontier = max(frontier, end)
            prev_end = end
        periods.append(rows[hi][1] - t0)
        idle.append(idle_ns)
    period = sum(periods) / steps
    print(f"{label}: {steps} steps, {period / 1e3:.1f} us a step (argmax end to argmax end), "
          f"{sum(idle) / steps / 1e3:.1f} us of it with no kernel running")
    print(f"{'kernel':58} {'grid':>6} {'/step':>6} {'dur us':>7} {'lead us':>8} "
          f"{'incr us/step':>12} {'share':>6}")
    for key in sorted(kinds, key=lambda k: order[k]):
        n, dur, lead, inc = kinds[key]
        per = n / steps
        print(f"{short(key[0]):58} {key[1]:6d} {per:6.1f} {dur / n / 1e3:7.2f} "
              f"{lead / n / 1e3:8.2f} {inc / steps / 1e3:12.1f} {inc / steps / period:6.1%}")
    # The middle of the last step in end order: starts and ends from the first one's end.
    lo, hi = ends[-2], ends[-1]
    mid = (lo + hi) // 2
    window = rows[mid:mid + 14]
    t0 = window[0][1]
    print(f"the last step's kernels {mid - lo} to {mid - lo + len(window) - 1} of {hi - lo} "
          f"(us from the first one's end; stream):")
    for start, end, name, grid, stream in window:
        print(f"  {(start - t0) / 1e3:8.2f} {(end - t0) / 1e3:8.2f} {stream:4d} {grid:6d}  "
              f"{short(name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
