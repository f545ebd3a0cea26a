#!/usr/bin/env python3
"""Summarizes an Nsight Systems capture of `duality bench` decode steps (scripts/gpu-check.sh
timeline): the kernels' mean time per step, then where one step's time goes on the GPU.

usage: timeline_summary.py KERN_SUM.csv GPU_TRACE.csv LABEL STEPS

KERN_SUM.csv and GPU_TRACE.csv are `nsys stats -r cuda_gpu_kern_sum,cuda_gpu_trace -f csv`
reports. Steps are split at each host-to-device copy (a pass's description goes to the GPU first);
for the second-to-last step (the last one's successor bounds it) it prints every operation that
is not one of the layers' repeated kernels, with its start from the step's start, its duration and
the idle gap before it, and the step's totals: the period, the busy time (the union of the
operations' intervals) and the idle time, inside and outside the span from the first kernel to
the last one before the step's device-to-host copy.
"""
import csv
import sys
from collections import Counter


def main() -> int:
    kern_sum, trace, label, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    rows = list(csv.DictReader(open(kern_sum)))
    total = sum(float(r["Total Time (ns)"]) for r in rows)
    print(f"{label}: {len(rows)} kernels, {total / steps / 1e3:.0f} us of kernel time per step")
    for r in rows[:12]:
        print(f'{float(r["Time (%)"]):5.1f}% {int(r["Instances"]) / steps:6.0f}/step '
              f'{float(r["Avg (ns)"]) / 1e3:8.2f} us  {r["Name"][:70]}')

    ops = []
    for r in csv.DictReader(open(trace)):
        ops.append((float(r["Start (ns)"]), float(r["Duration (ns)"]), r["Name"]))
    ops.sort()
    starts = [i for i, (_, _, name) in enumerate(ops) if "Host-to-Device" in name]
    if len(starts) < 3:
        print(f"{label}: fewer than 3 host-to-device copies in the trace; no step breakdown")
        return 0
    periods = [ops[b][0] - ops[a][0] for a, b in zip(starts, starts[1:])]
    print(f"{label}: {len(periods)} step periods, mean {sum(periods) / len(periods) / 1e3:.1f} us,"
          f" min {min(periods) / 1e3:.1f} us")
    a, b = starts[-2], starts[-1]
    step = ops[a:b]
    t0, t_end = step[0][0], ops[b][0]
    names = [n for _, _, n in step]
    repeated = {n for n, count in Counter(names).items() if count > 4}
    d2h = [i for i, n in enumerate(names) if "Device-to-Host" in n]
    kernels = [i for i, n in enumerate(names) if "memcpy" not in n and "memset" not in n]
    first_k = kernels[0] if kernels else 0
    last_k = max((i for i in kernels if not d2h or i < d2h[-1]), default=len(step) - 1)
    busy = idle_in = idle_out = 0.0
    cursor = t0
    print(f"{label}: one step, ops other than the {len(repeated)} kinds of kernel repeated per layer "
          f"(offset, duration, idle gap before it; us):")
    for i, (s, d, n) in enumerate(step):
        gap = max(0.0, s - cursor)
        if first_k < i <= last_k:
            idle_in += gap
        else:
            idle_out += gap
        busy += max(0.0, s + d - max(s, cursor))
        cursor = max(cursor, s + d)
        if n not in repeated:
            print(f"  {(s - t0) / 1e3:8.1f} {d / 1e3:7.2f} {gap / 1e3:6.2f}  {n[:80]}")
    tail = max(0.0, t_end - cursor)
    idle_out += tail
    print(f"  {(t_end - t0) / 1e3:8.1f}                 next step ({tail / 1e3:.2f} idle before it)")
    print(f"{label}: period {(t_end - t0) / 1e3:.1f} us = busy {busy / 1e3:.1f} + idle within the "
          f"kernels {idle_in / 1e3:.1f} + idle outside them {idle_out / 1e3:.1f}; "
          f"kernels span {(step[last_k][0] + step[last_k][1] - step[first_k][0]) / 1e3:.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
