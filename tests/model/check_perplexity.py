#!/usr/bin/env python3
"""`duality perplexity` on the bundled model against reference perplexities that transformers
measured, with the same number of scored tokens:
- by default the whole eval files against train_log.json's reference_perplexity, within 0.5% each
  (about 580k scored tokens: minutes of CPU);
- with --prefix-reference FILE the first windows of each file (`duality perplexity --windows N`)
  against FILE (scripts/make_perplexity_reference.py: transformers, float32), within 0.01% each:
  the same recipe on about a sixth of the tokens, which is what CI runs."""
import argparse
import json
import re
import subprocess
import sys

ap = argparse.ArgumentParser()
ap.add_argument("--duality", required=True)
ap.add_argument("--model", required=True)
ap.add_argument("--eval-dir", required=True)
ap.add_argument("--prefix-reference", help="JSON from scripts/make_perplexity_reference.py")
ap.add_argument("--device", default="cpu")
args = ap.parse_args()

if args.prefix_reference:
    ref_json = json.load(open(args.prefix_reference))
    refs = ref_json["files"]
    extra = ["--windows", str(ref_json["windows"]), "--context", str(ref_json["context"])]
    tolerance = 0.0001
else:
    log = json.load(open(f"{args.model}/train_log.json"))["reference_perplexity"]
    refs = {"gutenberg-valid.txt": log["valid.txt"], "wikitext-2-raw-test.txt": log["wikitext.txt"]}
    extra = ["--context", "1024"]
    tolerance = 0.005

failed = False
for name, ref in refs.items():
    out = subprocess.run([args.duality, "perplexity", "--model", args.model, "--file",
                          f"{args.eval_dir}/{name}", "-q", "--device", args.device] + extra,
                         capture_output=True, text=True)
    if out.returncode != 0:
        print(f"{name}: duality failed: {out.stderr}")
        failed = True
        continue
    m = re.match(r"perplexity = ([0-9.]+) over ([0-9]+) tokens", out.stdout)
    ppl, scored = float(m.group(1)), int(m.group(2))
    rel = abs(ppl - ref["ppl"]) / ref["ppl"]
    ok = rel <= tolerance and scored == ref["scored_tokens"]
    failed |= not ok
    print(f"{name}: duality {ppl:.4f} over {scored} tokens, reference {ref['ppl']:.4f} over "
          f"{ref['scored_tokens']} ({100 * rel:.4f}% apart, tolerance {100 * tolerance:g}%) "
          f"{'ok' if ok else 'FAIL'}")
print(f"{len(refs)} passed, 0 failed" if not failed else "perplexity check FAILED")
sys.exit(1 if failed else 0)
