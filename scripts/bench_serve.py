#!/usr/bin/env python3
"""Serving benchmark for `duality serve` (the companion of `duality bench`).

Replays a mixed workload against a running server, or starts one itself:

    scripts/bench_serve.py --url http://127.0.0.1:8000 --requests 200 --concurrency 16
    scripts/bench_serve.py --duality build/duality --model models/mamba2-gutenberg-17m \\
        --requests 64 --concurrency 8 --prompt-len 16-512 --max-tokens 32 \\
        --multi-turn-fraction 0.3 [--json] [extra `duality serve` flags, e.g. --max-seqs 32]
    scripts/bench_serve.py --url ... --cold-vs-cached 4096

Every request is a streamed `/v1/completions` call with a token-id prompt (exact lengths),
greedy decoding, `ignore_eos`, `return_token_ids` and `stream_options.include_usage`. A fraction
(--multi-turn-fraction) of the requests are follow-up turns: the prompt of a finished
conversation, its answer and --turn-tokens new tokens, which should be answered from the
conversation cache (a planned follow-up with no finished, idle conversation to extend starts a
new one, so the achieved fraction is printed). Prompt tokens are drawn from a seeded generator
(ids in [100, --vocab-max)), so runs are repeatable.

Reported: requests/s, output tokens/s, TTFT p50/p99 (first streamed text), inter-token latency
p50/p99 (gaps between streamed chunks), end-to-end latency p50/p99, the cache hit rate from the
/metrics deltas (hits / (hits + misses)), the cached-prompt fraction (cached_tokens /
prompt_tokens from the usage chunks), and the engine steps and the model's busy time (sum of
duality_step_seconds) against the wall time. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
import urllib.parse

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "server"))

from server_harness import Server, percentile, stream_texts, stream_token_ids  # noqa: E402


def parse_range(text: str) -> list[int]:
    """'a-b' (uniform in [a, b]) -> [-1, a, b]; 'a,b,c' (one of them) or 'a' -> [a, b, c]."""
    text = text.strip()
    if "-" in text and "," not in text:
        lo, hi = (int(x) for x in text.split("-", 1))
        if lo < 1 or hi < lo:
            raise argparse.ArgumentTypeError(f"bad range {text!r}")
        return [-1, lo, hi]
    vals = [int(x) for x in text.split(",") if x.strip()]
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"bad list {text!r}")
    return vals


def draw(spec: list[int], rng: random.Random) -> int:
    if spec[0] == -1:
        return rng.randint(spec[1], spec[2])
    return rng.choice(spec)


class Client:
    def __init__(self, srv: Server, model: str | None, timeout: float):
        self.srv = srv
        self.model = model
        self.timeout = timeout

    def stream(self, prompt: list[int], max_tokens: int) -> dict:
        body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                "ignore_eos": True, "return_token_ids": True, "stream": True,
                "stream_options": {"include_usage": True}}
        if self.model:
            body["model"] = self.model
        res = self.srv.stream("/v1/completions", body, timeout=self.timeout)
        out = {"ok": res.status == 200 and res.done and res.error is None,
               "status": res.status, "error": res.error or (res.body[:300].decode("utf-8",
                                                                               "replace")
                                                            if res.status != 200 else None),
               "latency": res.t_end - res.t_sent, "ttft": res.ttft, "itl": [],
               "usage": None, "token_ids": None}
        text_times = []
        for ev, t in zip(res.events, res.times):
            if ev.get("usage"):
                out["usage"] = ev["usage"]
            if any((c.get("text") or "") for c in ev.get("choices") or []):
                text_times.append(t)
        out["itl"] = [b - a for a, b in zip(text_times, text_times[1:])]
        ids = stream_token_ids(res.events).get(0)
        out["token_ids"] = ids
        out["text"] = stream_texts(res.events).get(0, "")
        return out


def metrics_snapshot(srv: Server) -> dict[str, float]:
    try:
        m = srv.metrics()
    except Exception:  # noqa: BLE001 (a server without /metrics still benchmarks)
        return {}
    names = ["duality_cache_hits_total", "duality_cache_misses_total",
             "duality_cache_hit_tokens_total", "duality_prompt_tokens_total",
             "duality_prefill_tokens_total", "duality_generation_tokens_total",
             "duality_step_seconds_sum", "duality_step_seconds_count"]
    return {n: m.value(n) for n in names}


def run_workload(client: Client, args) -> dict:
    rng = random.Random(args.seed)
    plan = []  # (is_follow_up, prompt_len, max_tokens, new_tokens)
    for _ in range(args.requests):
        plan.append((rng.random() < args.multi_turn_fraction, draw(args.prompt_len, rng),
                     draw(args.max_tokens, rng), [rng.randrange(100, args.vocab_max)
                                                  for _ in range(args.turn_tokens)]))
    finished: list[list[int]] = []  # histories of finished conversations, free to extend
    lock = threading.Lock()
    counter = iter(range(len(plan)))
    results: list[dict] = []
    warned = [False]

    def next_prompt(k: int) -> tuple[list[int], bool]:
        follow, plen, _, new = plan[k]
        with lock:
            if follow and finished:
                hist = finished.pop(random.Random(args.seed + k).randrange(len(finished)))
                return hist + new, True
        r = random.Random(args.seed * 7919 + k)
        return [r.randrange(100, args.vocab_max) for _ in range(plen)], False

    def worker() -> None:
        while True:
            with lock:
                k = next(counter, None)
            if k is None:
                return
            prompt, follow = next_prompt(k)
            res = client.stream(prompt, plan[k][2])
            res["follow_up"] = follow
            res["prompt_len"] = len(prompt)
            with lock:
                results.append(res)
                if res["ok"]:
                    if res["token_ids"] is None:
                        if not warned[0]:
                            warned[0] = True
                            print("bench_serve: streamed chunks carry no token_ids; follow-up "
                                  "turns extend the prompt only", file=sys.stderr)
                        finished.append(prompt)
                    else:
                        finished.append(prompt + res["token_ids"])

    before = metrics_snapshot(client.srv)
    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    after = metrics_snapshot(client.srv)
    return summarize(results, wall, before, after, args)


def summarize(results: list[dict], wall: float, before: dict, after: dict, args) -> dict:
    ok = [r for r in results if r["ok"]]
    ttft = [r["ttft"] for r in ok if r["ttft"] is not None]
    itl = [x for r in ok for x in r["itl"]]
    lat = [r["latency"] for r in ok]
    out_tokens = sum((r["usage"] or {}).get("completion_tokens", 0) for r in ok)
    prompt_tokens = sum((r["usage"] or {}).get("prompt_tokens", 0) for r in ok)
    cached = sum(((r["usage"] or {}).get("prompt_tokens_details") or {}).get("cached_tokens", 0)
                 for r in ok)

    def d(name):
        return after.get(name, 0.0) - before.get(name, 0.0) if after and before else None

    hits, misses = d("duality_cache_hits_total"), d("duality_cache_misses_total")
    hit_rate = hits / (hits + misses) if hits is not None and (hits + misses) > 0 else None
    follow = [r for r in ok if r["follow_up"]]
    summary = {
        "requests": len(results), "succeeded": len(ok), "failed": len(results) - len(ok),
        "follow_up_turns": len(follow), "concurrency": args.concurrency,
        "wall_s": wall,
        "requests_per_s": len(ok) / wall if wall > 0 else None,
        "output_tokens_per_s": out_tokens / wall if wall > 0 else None,
        "prompt_tokens": prompt_tokens, "output_tokens": out_tokens,
        "ttft_p50_ms": percentile(ttft, 50) * 1e3, "ttft_p99_ms": percentile(ttft, 99) * 1e3,
        "ttft_follow_up_p50_ms": percentile([r["ttft"] for r in follow
                                             if r["ttft"] is not None], 50) * 1e3,
        "itl_p50_ms": percentile(itl, 50) * 1e3, "itl_p99_ms": percentile(itl, 99) * 1e3,
        "e2e_p50_ms": percentile(lat, 50) * 1e3, "e2e_p99_ms": percentile(lat, 99) * 1e3,
        "cache_hit_rate": hit_rate,
        "cached_prompt_fraction": cached / prompt_tokens if prompt_tokens else None,
        "prefill_tokens": d("duality_prefill_tokens_total"),
        "engine_steps": d("duality_step_seconds_count"),
        "model_busy_s": d("duality_step_seconds_sum"),
        "errors": sorted({str(r["error"]) for r in results if not r["ok"]})[:5],
    }
    return summary


def fmt(v, unit="") -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}{unit}" if abs(v) < 10 else f"{v:.1f}{unit}"
    return f"{v}{unit}"


def print_table(s: dict) -> None:
    rows = [
        ("requests (ok / failed)", f"{s['succeeded']} / {s['failed']}"
                                   f"  ({s['follow_up_turns']} follow-up turns)"),
        ("concurrency", fmt(s["concurrency"])),
        ("wall time", fmt(s["wall_s"], " s")),
        ("requests/s", fmt(s["requests_per_s"])),
        ("output tokens/s", fmt(s["output_tokens_per_s"])),
        ("TTFT p50 / p99", f"{fmt(s['ttft_p50_ms'], ' ms')} / {fmt(s['ttft_p99_ms'], ' ms')}"),
        ("TTFT p50 of follow-ups", fmt(s["ttft_follow_up_p50_ms"], " ms")),
        ("ITL p50 / p99", f"{fmt(s['itl_p50_ms'], ' ms')} / {fmt(s['itl_p99_ms'], ' ms')}"),
        ("end-to-end p50 / p99", f"{fmt(s['e2e_p50_ms'], ' ms')} / {fmt(s['e2e_p99_ms'], ' ms')}"),
        ("cache hit rate (/metrics)", fmt(s["cache_hit_rate"])),
        ("cached-prompt fraction", fmt(s["cached_prompt_fraction"])),
        ("engine steps / model busy",
         f"{fmt(s['engine_steps'])} / {fmt(s['model_busy_s'], ' s')}"),
        ("prompt / prefill / output tokens",
         f"{s['prompt_tokens']} / {fmt(s['prefill_tokens'])} / {s['output_tokens']}"),
    ]
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{w}}  {v}")
    for e in s["errors"]:
        print(f"error: {e}")


def no_nan(d: dict) -> dict:
    """NaN (a percentile of nothing, an unreachable /metrics) as null: JSON has no NaN."""
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in d.items()}


def server_ttft_s(client: Client) -> float:
    """The server's summed arrival-to-first-token time so far (from /metrics)."""
    try:
        return client.srv.metrics().value("duality_time_to_first_token_seconds_sum")
    except Exception:  # noqa: BLE001 (a server without /metrics)
        return float("nan")


def cold_vs_cached(client: Client, n: int, args) -> dict:
    """--repeat rounds, each with a fresh N-token history: turn 1 (cold), turn 2 (the history,
    turn 1's answer and new tokens: from the cache), and a never-seen prompt of turn 2's length
    (what turn 2 costs without the cache). Medians over the rounds after the first (the first
    also pays one-time costs: GEMM plans, graph captures); the first round is reported apart.
    The server-side TTFT is a /metrics delta, so other clients of a shared server distort it."""
    rng = random.Random(args.seed + 17)

    def ids(k):
        return [rng.randrange(100, args.vocab_max) for _ in range(k)]

    def timed(prompt, m):
        before = server_ttft_s(client)
        r = client.stream(prompt, m)
        if not r["ok"]:
            raise SystemExit(f"bench_serve: request failed: {r['status']} {r['error']}")
        r["server_ttft"] = server_ttft_s(client) - before
        return r

    def cached_of(r):
        return ((r["usage"] or {}).get("prompt_tokens_details") or {}).get("cached_tokens")

    rounds = []
    for i in range(max(1, args.repeat)):
        m = draw(args.max_tokens, rng)
        # Each round's new turn has another length, so no round runs exactly the shapes of an
        # earlier one (as in a real conversation).
        history, q1, q2 = ids(n), ids(args.turn_tokens), ids(args.turn_tokens + 3 * i)
        first = timed(history + q1, m)
        turn2 = history + q1 + (first["token_ids"] or []) + q2
        second = timed(turn2, m)
        unseen = timed(ids(len(turn2)), m)
        rounds.append({"turn1": first, "turn2": second, "cold": unseen,
                       "turn2_prompt_tokens": len(turn2), "turn2_cached_tokens": cached_of(second),
                       "note": None if first["token_ids"] is not None else
                       "streamed chunks carry no token_ids: turn 2 omits the turn-1 answer"})

    def med(key, field, rs):
        return percentile([r[key][field] for r in rs], 50) * 1e3

    steady = rounds[1:] or rounds
    out = {
        "history_tokens": n,
        "rounds": len(rounds),
        "turn2_prompt_tokens": [r["turn2_prompt_tokens"] for r in rounds],
        "turn2_cached_tokens": [r["turn2_cached_tokens"] for r in rounds],
        "first_round_turn1_ttft_ms": rounds[0]["turn1"]["ttft"] * 1e3,
        "first_round_turn2_ttft_ms": rounds[0]["turn2"]["ttft"] * 1e3,
        "first_round_cold_ttft_ms": rounds[0]["cold"]["ttft"] * 1e3,
        "turn1_ttft_ms_p50": med("turn1", "ttft", steady),
        "turn2_cached_ttft_ms_p50": med("turn2", "ttft", steady),
        "cold_same_length_ttft_ms_p50": med("cold", "ttft", steady),
        "turn2_cached_server_ttft_ms_p50": med("turn2", "server_ttft", steady),
        "cold_same_length_server_ttft_ms_p50": med("cold", "server_ttft", steady),
    }
    def ratio(num, den):
        return num / den if den and den == den and num == num else None  # no 0 or NaN

    out["ratio_cold_over_cached_p50"] = ratio(out["cold_same_length_ttft_ms_p50"],
                                              out["turn2_cached_ttft_ms_p50"])
    out["ratio_cold_over_cached_server_p50"] = ratio(out["cold_same_length_server_ttft_ms_p50"],
                                                     out["turn2_cached_server_ttft_ms_p50"])
    notes = {r["note"] for r in rounds if r["note"]}
    if len(rounds) < 2:
        notes.add("one round only: the medians include its one-time costs")
    if notes:
        out["note"] = "; ".join(sorted(notes))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000")
    ap.add_argument("--duality", help="start `DUALITY serve --port 0` (with --model and any "
                                      "flags this script does not know)")
    ap.add_argument("--model", help="model folder for the server this script starts")
    ap.add_argument("--served-model", help="`model` field to send (default: none)")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--prompt-len", type=parse_range, default=parse_range("16-512"),
                    help="prompt tokens: a range a-b or a list a,b,c (default 16-512)")
    ap.add_argument("--max-tokens", type=parse_range, default=parse_range("32"),
                    help="tokens to generate: a range a-b or a list (default 32)")
    ap.add_argument("--multi-turn-fraction", type=float, default=0.25,
                    help="fraction of requests that extend a finished conversation")
    ap.add_argument("--turn-tokens", type=int, default=16,
                    help="new tokens a follow-up turn adds (default 16)")
    ap.add_argument("--cold-vs-cached", type=int, metavar="N",
                    help="instead of the workload: TTFT of a turn with an N-token history, "
                         "cold and then from the cache")
    ap.add_argument("--repeat", type=int, default=5,
                    help="--cold-vs-cached rounds (default 5; medians leave out the first)")
    ap.add_argument("--vocab-max", type=int, default=50000,
                    help="prompt ids are drawn from [100, VOCAB_MAX)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=600, help="per-request timeout (s)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args, serve_extra = ap.parse_known_args()
    if not (0 <= args.multi_turn_fraction <= 1):
        ap.error("--multi-turn-fraction must be in [0, 1]")
    if args.requests < 1 or args.concurrency < 1:
        ap.error("--requests and --concurrency must be positive")
    if bool(args.url) == bool(args.duality):
        ap.error("give exactly one of --url and --duality")
    if args.url and serve_extra:
        ap.error(f"unknown arguments: {' '.join(serve_extra)}")

    started = None
    if args.duality:
        serve_args = (["--model", args.model] if args.model else []) + serve_extra
        started = Server(args.duality, serve_args, request_timeout=args.timeout)
        srv = started
        if not args.json:
            print(started.listen_line, file=sys.stderr)
    else:
        u = urllib.parse.urlparse(args.url)
        srv = Server("", start=False, request_timeout=args.timeout)
        srv.host = u.hostname or "127.0.0.1"
        srv.port = u.port or 80
    try:
        client = Client(srv, args.served_model, args.timeout)
        if args.cold_vs_cached:
            out = cold_vs_cached(client, args.cold_vs_cached, args)
            if args.json:
                print(json.dumps(no_nan(out), indent=2))
            else:
                for k, v in out.items():
                    print(f"{k:<36} {fmt(v)}")
            return 0
        summary = run_workload(client, args)
        if args.json:
            print(json.dumps(no_nan(summary), indent=2))
        else:
            print_table(summary)
        return 0 if summary["failed"] == 0 else 1
    finally:
        if started is not None:
            code = started.stop(timeout=60)
            if code != 0:
                print(f"bench_serve: the server exited {code}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
