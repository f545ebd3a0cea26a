#!/usr/bin/env python3
"""Checks `duality tokenize` against Hugging Face `tokenizers` on real text.

For each corpus the ids must equal `tokenizers.Tokenizer.from_file(...).encode(text).ids`, and
`duality tokenize --decode` of those ids must give back the input exactly:

  * wikitext-2-raw-test.txt and gutenberg-valid.txt, each as one string;
  * lambada_test.jsonl, every passage's "text" on its own (they contain newlines, so they are
    passed with --jsonl);
  * optionally (--vectors DIR) llama.cpp-style vectors.inp / vectors.out;
  * optionally (--unicode-sweep) short strings built around every Unicode scalar value of the
    assigned planes, which exercises the regex classes (\\p{L}, \\p{N}, \\s) and NFC.

Needs `pip install tokenizers`; a missing module is a failure, not a skip. Exits non-zero on any
mismatch and prints a summary either way.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

SEPARATOR = "\n__ggml_vocab_test__\n"


def run_duality(args, *flags):
    cmd = [args.duality, "tokenize", "--model", args.tokenizer, *flags]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): "
                           f"{proc.stderr.decode(errors='replace')}")
    return proc.stdout


def first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


class Checker:
    def __init__(self, args, hf):
        self.args, self.hf = args, hf
        self.failures = []
        self.tmp = tempfile.mkdtemp(prefix="duality-compare-hf-")

    def path(self, name):
        return os.path.join(self.tmp, name)

    def fail(self, what):
        self.failures.append(what)
        print("  MISMATCH " + what)

    def describe(self, ids, pos):
        lo = max(0, pos - 5)
        return f"context {self.hf.decode(ids[lo:pos + 5], skip_special_tokens=False)!r}"

    def whole_file(self, name, path):
        start = time.time()
        with open(path, "rb") as f:
            raw = f.read()
        text = raw.decode("utf-8")
        want = self.hf.encode(text).ids
        got = json.loads(run_duality(self.args, "--json", "--file", path))
        if got != want:
            i = first_difference(got, want)
            self.fail(f"{name}: ids differ at position {i} of {len(want)} "
                      f"(duality {got[i:i + 5]}, hf {want[i:i + 5]}; {self.describe(want, i)})")
        ids_path = self.path(name + ".ids.json")
        with open(ids_path, "w") as f:
            json.dump(got, f)
        back = run_duality(self.args, "--decode", "--file", ids_path)
        if back != raw:
            i = first_difference(back, raw)
            self.fail(f"{name}: decode(encode(text)) differs from the text at byte {i}: "
                      f"{back[i:i + 20]!r} vs {raw[i:i + 20]!r}")
        print(f"  {name}: {len(raw)} bytes, {len(want)} tokens ({time.time() - start:.1f} s)")

    def many(self, name, texts, expected=None, nfc_round_trip=False):
        """Encodes every text separately through --jsonl and checks ids and the round trip
        (to the text itself, or with nfc_round_trip to its normalized form: NFC is lossy)."""
        start = time.time()
        src = self.path(name + ".jsonl")
        with open(src, "w", encoding="utf-8") as f:
            for t in texts:
                f.write(json.dumps(t) + "\n")
        got = [json.loads(line) for line in run_duality(self.args, "--jsonl", "--file", src)
               .decode().split("\n")[:-1]]
        want = [e.ids for e in self.hf.encode_batch(texts)]
        if len(got) != len(texts):
            self.fail(f"{name}: {len(got)} results for {len(texts)} texts")
            return
        bad = 0
        for i, (t, g, w) in enumerate(zip(texts, got, want)):
            if g != w or (expected is not None and g != expected[i]):
                bad += 1
                if bad <= 10:
                    self.fail(f"{name}[{i}] {t[:60]!r}: duality {g[:20]} hf {w[:20]}" +
                              (f" expected {expected[i][:20]}" if expected is not None else ""))
        if bad > 10:
            self.fail(f"{name}: {bad} texts differ in all")
        ids_path = self.path(name + ".ids")
        with open(ids_path, "w") as f:
            for g in got:
                f.write(json.dumps(g) + "\n")
        # Split on "\n" only: the JSON strings may hold U+2028 and friends, which splitlines() cuts.
        out = run_duality(self.args, "--decode", "--lines", "--file", ids_path).decode()
        back = [json.loads(line) for line in out.split("\n")[:-1]]
        if nfc_round_trip:
            texts = [self.hf.normalizer.normalize_str(t) for t in texts]
        rt_bad = [i for i, (t, b) in enumerate(zip(texts, back)) if t != b]
        if len(back) != len(texts) or rt_bad:
            self.fail(f"{name}: decode(encode(text)) != text for {len(rt_bad)} texts, e.g. "
                      f"{[texts[i][:40] for i in rt_bad[:3]]!r}")
        tokens = sum(len(w) for w in want)
        print(f"  {name}: {len(texts)} texts, {tokens} tokens, {bad} id mismatches "
              f"({time.time() - start:.1f} s)")


def sweep_texts():
    """Strings built around every scalar value of the assigned planes (0-3, 14)."""
    planes = list(range(0, 0x323B0)) + list(range(0xE0000, 0xE0200)) + [0xF0000, 0x10FFFD]
    texts = []
    for cp in planes:
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        # Neighbours of each regex class, runs of the character, a combining mark after it
        # (NFC), and a contraction.
        texts.append(f"a{c}b {c}{c}1 {c}\u0301 x{c} 's{c}\t{c}  {c}")
    return texts


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duality", required=True, help="the duality executable")
    ap.add_argument("--tokenizer", required=True, help="tokenizer.json (or its model folder)")
    ap.add_argument("--eval-dir", required=True,
                    help="folder with wikitext-2-raw-test.txt, gutenberg-valid.txt, "
                         "lambada_test.jsonl")
    ap.add_argument("--vectors", help="folder with vectors.inp / vectors.out")
    ap.add_argument("--unicode-sweep", action="store_true",
                    help="also compare strings built around every assigned code point")
    args = ap.parse_args()

    try:
        import tokenizers
    except ImportError:
        print("compare_hf.py: the Python package `tokenizers` is required "
              "(pip install tokenizers)", file=sys.stderr)
        return 2
    tok_path = args.tokenizer
    if os.path.isdir(tok_path):
        tok_path = os.path.join(tok_path, "tokenizer.json")
    hf = tokenizers.Tokenizer.from_file(tok_path)
    print(f"comparing {args.duality} with tokenizers {tokenizers.__version__} on {tok_path}")
    c = Checker(args, hf)
    try:
        for name in ("wikitext-2-raw-test.txt", "gutenberg-valid.txt"):
            c.whole_file(name, os.path.join(args.eval_dir, name))
        with open(os.path.join(args.eval_dir, "lambada_test.jsonl"), encoding="utf-8") as f:
            passages = [json.loads(line)["text"] for line in f if line.strip()]
        c.many("lambada_test.jsonl", passages)
        if args.vectors:
            with open(os.path.join(args.vectors, "vectors.inp"), encoding="utf-8") as f:
                inputs = f.read().split(SEPARATOR)
            # The file ends with a separator: the last split is not a case.
            if inputs and inputs[-1] == "":
                inputs.pop()
            with open(os.path.join(args.vectors, "vectors.out"), encoding="utf-8") as f:
                expected = [[int(x) for x in line.split()] for line in f.read().split("\n")[:-1]]
            if len(expected) != len(inputs):
                c.fail(f"vectors: {len(inputs)} inputs but {len(expected)} expected lines")
            else:
                c.many("vectors", inputs, expected)
        if args.unicode_sweep:
            c.many("unicode-sweep", sweep_texts(), nfc_round_trip=True)
    except (RuntimeError, OSError, ValueError) as e:
        c.fail(str(e))
    if c.failures:
        print(f"FAILED: {len(c.failures)} problem(s)")
        return 1
    print("OK: duality matches Hugging Face tokenizers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
