#!/usr/bin/env python3
"""The fused SSD's roundings, emulated in numpy, against the f32 chunked SSD (its CPU twin).

For one head (x, B, C ~ N(0,1) rounded to bf16, Δ ~ U[1e-3, dt_hi], D = 1) this runs the chunked
SSD of spec 6.2 twice: in f32 (as cpu::ssd_chunked computes it, intra and chunk-state decays
clamped to exp(min(., 0))), and with the operands ssd_fused rounds (docs/numerics.md): S = C·Bᵀ
stored f16 scaled per 16×32 tile, W = S·decay·Δ, prev and x·decay·Δ rounded to bf16 as MMA
operands, y rounded to bf16. It prints, per A, how far the two are apart in the op tests' terms
(rel-L2, and elements past atol 0.05 + rtol 0.02·|expected|, the bf16 row of docs/numerics.md).

With A > 0 (outside every Mamba-2 model: A = -exp(A_log)) the states grow from chunk to chunk and
the clamped intra sums stop decaying, so y becomes a sum of large terms and the element-wise
tolerance fails on these roundings alone while rel-L2 stays near 3e-3: the signature of the
positive-A case dropped from the fused op cases (docs/ssd-fused-notes.md, v15).

    scripts/ssd_bf16_emulation.py [--len L] [--dt-hi X] [--seed S] [A ...]
"""
import argparse

import numpy as np


def bf16(a):
    """a rounded to bf16 (nearest, ties to even), as f32."""
    u = np.asarray(a, np.float32).view(np.uint32).astype(np.uint64)
    return (((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16).astype(np.uint32).view(np.float32)


def f16_tiles(s, q):
    """S stored as ssd_fused's split-S record: each 16×32 tile scaled by 2^(15-E) (E: the
    exponent of its largest |S|) and rounded to f16, then scaled back."""
    out = np.zeros_like(s)
    for i0 in range(0, q, 16):
        for j0 in range(0, q, 32):
            t = s[i0:i0 + 16, j0:j0 + 32]
            amax = float(np.abs(t).max())
            if amax == 0.0 or not np.isfinite(amax):
                out[i0:i0 + 16, j0:j0 + 32] = t
                continue
            up = 2.0 ** (15 - (int(np.floor(np.log2(amax))) + 1))
            out[i0:i0 + 16, j0:j0 + 32] = (t * up).astype(np.float16).astype(np.float32) / up
    return out


def chunked(x, b, c, dt, a, q, rounded):
    """y {L, P} of one head; `rounded`: with ssd_fused's operand roundings."""
    n_tok, p = x.shape
    state = np.zeros((p, b.shape[1]), np.float32)
    y = np.zeros((n_tok, p), np.float32)
    for t0 in range(0, n_tok, q):
        n = min(q, n_tok - t0)
        xc, bc, cc, d = x[t0:t0 + n], b[t0:t0 + n], c[t0:t0 + n], dt[t0:t0 + n]
        cs = np.cumsum(a * d).astype(np.float32)
        s = np.where(np.tril(np.ones((n, n), bool)), cc @ bc.T, 0).astype(np.float32)
        if rounded:
            pad = -(-n // 32) * 32
            sp = np.zeros((pad, pad), np.float32)
            sp[:n, :n] = s
            s = f16_tiles(sp, pad)[:n, :n]
        w = s * np.exp(np.minimum(cs[:, None] - cs[None, :], 0)) * d[None, :]
        prev = state
        if rounded:
            w, prev = bf16(w), bf16(state)
        y[t0:t0 + n] = (cc @ prev.T) * np.exp(cs)[:, None] + w @ xc + xc
        xs = xc * (np.exp(np.minimum(cs[-1] - cs, 0)) * d)[:, None]
        if rounded:
            xs = bf16(xs)
        state = np.exp(cs[-1]) * state + xs.T @ bc
    return bf16(y) if rounded else y


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--len", type=int, default=1000)
    ap.add_argument("--dt-hi", type=float, default=0.1)
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("A", type=float, nargs="*", default=[-8.0, -1.0, -0.05, 0.01, 0.05, 0.1])
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    p, n = 64, 128
    print(f"seed {args.seed}, numpy {np.__version__}, one head P={p} N={n}, "
          f"L={args.len}, chunk {args.chunk}, Δ ~ U[1e-3, {args.dt_hi}]")
    for a in args.A:
        x = bf16(rng.standard_normal((args.len, p)))
        b = bf16(rng.standard_normal((args.len, n)))
        c = bf16(rng.standard_normal((args.len, n)))
        dt = rng.uniform(1e-3, args.dt_hi, args.len).astype(np.float32)
        ref = chunked(x, b, c, dt, np.float32(a), args.chunk, False)
        got = chunked(x, b, c, dt, np.float32(a), args.chunk, True)
        err = np.abs(got - ref)
        past = int((err > 0.05 + 0.02 * np.abs(ref)).sum())
        rel = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
        print(f"A {a:+8.3f}: max|y| {np.abs(ref).max():9.3g}  rel-L2 {rel:.2e}  "
              f"past atol/rtol {past:5d} of {ref.size}  worst {err.max():.3g}")


if __name__ == "__main__":
    main()
