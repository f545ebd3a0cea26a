#!/usr/bin/env python3
"""Summarises an Nsight Compute CSV (ncu --csv --print-units base with gpu__time_duration.sum and
dram__bytes_{read,write}.sum) per kernel: launches, mean time, total time and achieved DRAM
bandwidth. Weight-initialisation kernels (fill_uniform, convert) are left out. Used by
`scripts/gpu-check.sh profile`.

    scripts/ncu_summary.py ncu.csv [--passes N]

--passes divides the totals by the number of model passes profiled (default: the number of
embedding gathers whose grid matches the first one, i.e. one per pass).
"""
import argparse
import collections
import csv
import io
import sys

SKIP = ("fill_uniform", "convert_kernel")


def base_name(name: str) -> str:
    """'void duality::<unnamed>::gather_rows_kernel<uint4>(...)' -> 'gather_rows_kernel'."""
    name = name.replace("(anonymous namespace)", "").replace("<unnamed>", "")
    name = name.split("(")[0].removeprefix("void ").split("<")[0]
    return name.rsplit("::", 1)[-1].rsplit(">", 1)[-1].strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv")
    ap.add_argument("--passes", type=int)
    args = ap.parse_args()
    text = open(args.csv, encoding="utf-8", errors="replace").read()
    start = text.find('"ID"')
    if start < 0:
        print(f"ncu_summary: no CSV header in {args.csv}", file=sys.stderr)
        return 1
    kernels = collections.OrderedDict()  # id -> {name, grid, metrics}
    for row in csv.DictReader(io.StringIO(text[start:])):
        k = kernels.setdefault(row["ID"], {"name": row["Kernel Name"], "grid": row["Grid Size"],
                                           "block": row["Block Size"], "m": {}})
        try:
            k["m"][row["Metric Name"]] = float(row["Metric Value"].replace(",", ""))
        except ValueError:
            pass
    for k in kernels.values():
        k["base"] = base_name(k["name"])
    rows = [k for k in kernels.values() if not k["base"].startswith(SKIP)]
    if not rows:
        print("ncu_summary: no kernels", file=sys.stderr)
        return 1
    first_gather = next((k["grid"] for k in rows if k["base"] == "gather_rows_kernel"), None)
    passes = args.passes or max(1, sum(1 for k in rows if k["base"] == "gather_rows_kernel"
                                       and k["grid"] == first_gather))
    agg = collections.OrderedDict()
    for k in rows:
        key = (k["name"].split("(")[0][:70], k["grid"])
        a = agg.setdefault(key, [0, 0.0, 0.0])
        a[0] += 1
        a[1] += k["m"].get("gpu__time_duration.sum", 0.0)
        a[2] += k["m"].get("dram__bytes_read.sum", 0.0) + k["m"].get("dram__bytes_write.sum", 0.0)
    total_ns = sum(a[1] for a in agg.values())
    print(f"{len(rows)} kernels over {passes} pass(es); GPU time per pass "
          f"{total_ns / passes / 1e3:.1f} us")
    print(f"{'kernel':<70} {'grid':>16} {'n/pass':>7} {'mean us':>9} {'us/pass':>9} "
          f"{'share':>6} {'GB/s':>7}")
    for (name, grid), (n, ns, byt) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
        print(f"{name:<70} {grid:>16} {n / passes:>7.1f} {ns / n / 1e3:>9.2f} "
              f"{ns / passes / 1e3:>9.1f} {ns / total_ns:>6.1%} {byt / ns if ns else 0:>7.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
