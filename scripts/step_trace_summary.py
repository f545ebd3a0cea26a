#!/usr/bin/env python3
"""Summarizes a DUALITY_TRACE_STEPS file (one line per engine step) into where serving time went:
decode-only steps by batch size, steps that carried prefill pieces, and host time between steps.

    DUALITY_TRACE_STEPS=steps.txt duality serve ...;  scripts/step_trace_summary.py steps.txt
"""
import sys
from collections import defaultdict


def main(path):
    rows = []
    with open(path) as f:
        next(f)  # header
        for line in f:
            start, model, gap, dec, pseqs, ptok = line.split()
            rows.append((float(start), float(model), float(gap), int(dec), int(pseqs), int(ptok)))
    if not rows:
        print("no steps")
        return
    span = rows[-1][0] + rows[-1][1] - rows[0][0]
    model = sum(r[1] for r in rows)
    gaps = sum(r[2] for r in rows[1:])
    print(f"steps {len(rows)}  span {span:.1f} ms  model {model:.1f} ms  host gaps {gaps:.1f} ms "
          f"({gaps / max(len(rows) - 1, 1) * 1e3:.0f} us/step)")
    by_b = defaultdict(list)
    mixed = []
    for r in rows:
        (mixed if r[4] else by_b[r[3]]).append(r)
    print("decode-only steps by batch rows: rows steps mean_ms total_ms")
    for b in sorted(by_b):
        ms = [r[1] for r in by_b[b]]
        print(f"  {b:4d} {len(ms):6d} {sum(ms) / len(ms):8.3f} {sum(ms):9.1f}")
    if mixed:
        t = sum(r[1] for r in mixed)
        tok = sum(r[5] for r in mixed)
        dec = sum(r[3] for r in mixed)
        print(f"steps with prefill: {len(mixed)}  {t:.1f} ms  prefill tokens {tok} "
              f"({tok / t * 1e3 if t else 0:.0f} tokens/s)  decode rows among them {dec}")


if __name__ == "__main__":
    main(sys.argv[1])
