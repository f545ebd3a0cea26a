#!/usr/bin/env python3
"""Reference perplexities of the bundled model on the first windows of the eval files, from
transformers' Mamba2ForCausalLM, for tests/model/check_perplexity.py --prefix-reference.

The recipe is train_log.json's (../shared/README.md): the whole file tokenized as one string
(tokenizer.json through the `tokenizers` library); non-overlapping windows of --context tokens,
each from a zero state; every token but the first of each window scored; the softmax over the
model's whole (padded) vocabulary; perplexity = exp(mean negative log-likelihood). Only the
first --windows windows are scored, so that CI's check runs in a fraction of the whole files'
time (`duality perplexity --windows N` scores the same prefix).

Usage (on the GPU machine, where torch and transformers are installed; the eval files are not
there unless carried, e.g. copied into .deps/eval):
    python3 scripts/make_perplexity_reference.py --model models/mamba2-gutenberg-17m \
        --eval-dir .deps/eval --windows 48 --out tests/model/perplexity_prefix_reference.json

The weights (bf16 on disk) are computed in float32, with TF32 off on the GPU, in a deterministic
order (no sampling: no seed is involved); versions and SHA-256 of every input are recorded.
"""

import argparse
import hashlib
import json
import math
import platform

import tokenizers
import torch
import transformers
from transformers import Mamba2ForCausalLM

FILES = ["gutenberg-valid.txt", "wikitext-2-raw-test.txt"]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--eval-dir", required=True)
    ap.add_argument("--windows", type=int, default=48)
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = Mamba2ForCausalLM.from_pretrained(args.model).float().to(device).eval()
    tok = tokenizers.Tokenizer.from_file(f"{args.model}/tokenizer.json")

    result = {
        "recipe": "train_log.json's (../shared/README.md) on the first `windows` windows",
        "reference": f"transformers Mamba2ForCausalLM, float32 on {device}"
                     + (f" ({torch.cuda.get_device_name()}, TF32 off)" if device == "cuda" else ""),
        "windows": args.windows,
        "context": args.context,
        "model_sha256": sha256(f"{args.model}/model.safetensors"),
        "tokenizer_sha256": sha256(f"{args.model}/tokenizer.json"),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__,
                     "tokenizers": tokenizers.__version__},
        "files": {},
    }
    C = args.context
    for name in FILES:
        path = f"{args.eval_dir}/{name}"
        with open(path, encoding="utf-8") as f:
            ids = tok.encode(f.read()).ids
        windows = [ids[w * C:(w + 1) * C] for w in range(min(args.windows, -(-len(ids) // C)))]
        windows = [w for w in windows if len(w) >= 2]
        nll_sum, scored = 0.0, 0
        with torch.no_grad():
            for w in windows:  # each window from a zero state: one forward call each
                x = torch.tensor([w], device=device)
                logits = model(input_ids=x).logits[0, :-1].double()
                nll = -torch.log_softmax(logits, dim=-1).gather(1, x[0, 1:, None])
                nll_sum += float(nll.sum())
                scored += len(w) - 1
        ppl = math.exp(nll_sum / scored)
        result["files"][name] = {"sha256": sha256(path), "file_tokens": len(ids),
                                 "scored_tokens": scored, "ppl": ppl}
        print(f"{name}: ppl {ppl:.6f} over {scored} tokens ({len(windows)} windows)")
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
