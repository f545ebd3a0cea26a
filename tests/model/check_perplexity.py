#!/usr/bin/env python3
"""`duality perplexity` on the bundled model against the reference perplexities that
transformers measured (train_log.json), within 0.5% each, with the same number of scored tokens."""
import argparse
import json
import re
import subprocess
import sys

ap = argparse.ArgumentParser()
ap.add_argument("--duality", required=True)
ap.add_argument("--model", required=True)
ap.add_argument("--eval-dir", required=True)
args = ap.parse_args()

log = json.load(open(f"{args.model}/train_log.json"))
files = {"valid.txt": "gutenberg-valid.txt", "wikitext.txt": "wikitext-2-raw-test.txt"}
failed = False
for key, name in files.items():
    ref = log["reference_perplexity"][key]
    out = subprocess.run([args.duality, "perplexity", "--model", args.model, "--file",
                          f"{args.eval_dir}/{name}", "--context", "1024", "-q", "--device", "cpu"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        print(f"{name}: duality failed: {out.stderr}")
        failed = True
        continue
    m = re.match(r"perplexity = ([0-9.]+) over ([0-9]+) tokens", out.stdout)
    ppl, scored = float(m.group(1)), int(m.group(2))
    rel = abs(ppl - ref["ppl"]) / ref["ppl"]
    ok = rel <= 0.005 and scored == ref["scored_tokens"]
    failed |= not ok
    print(f"{name}: duality {ppl:.4f} over {scored} tokens, reference {ref['ppl']:.4f} over "
          f"{ref['scored_tokens']} ({100 * rel:.3f}% apart) {'ok' if ok else 'FAIL'}")
print("2 passed, 0 failed" if not failed else "perplexity check FAILED")
sys.exit(1 if failed else 0)
