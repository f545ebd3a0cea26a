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
Then the mean period and how much of it no kernel ran; a layer's kernels as medians from the
end of the repeated kernel with the largest increment (the next instance of each kind: its start
and end); and the kernels in the middle of the last step.
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
    # A layer's kernels from the end of the kernel kind with the largest increment among those that
    # run more than once a step (a layer's critical link): the median start and end of the next
    # instance of every kind, up to the anchor's next instance.
    repeated = [k for k in kinds if kinds[k][0] > steps]
    if repeated:
        anchor = max(repeated, key=lambda k: kinds[k][3])
        rel = defaultdict(lambda: ([], []))
        window_rows = rows[ends[0]:ends[-1] + 1]
        keys = [(r[2], r[3]) for r in window_rows]
        at = [i for i, k in enumerate(keys) if k == anchor]
        for a, b in zip(at, at[1:]):
            t0 = window_rows[a][1]
            seen = set()
            for j in range(a + 1, b + 1):
                k = keys[j]
                if k in seen:
                    continue
                seen.add(k)
                rel[k][0].append(window_rows[j][0] - t0)
                rel[k][1].append(window_rows[j][1] - t0)
        med = lambda v: sorted(v)[len(v) // 2] / 1e3
        print(f"a layer: medians over {len(at) - 1} layers, us from the end of "
              f"{short(anchor[0])} ({anchor[1]} blocks)")
        print(f"{'kernel':58} {'grid':>6} {'start':>7} {'end':>7}")
        for k in sorted(rel, key=lambda k: med(rel[k][1])):
            if len(rel[k][1]) * 2 < len(at) - 1:
                continue  # not in most layers
            print(f"{short(k[0]):58} {k[1]:6d} {med(rel[k][0]):7.2f} {med(rel[k][1]):7.2f}")
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
