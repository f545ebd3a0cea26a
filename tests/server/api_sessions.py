"""Sections 4-5 of the server tests: concurrency, multi-turn conversations from the state cache,
checkpoints."""

from __future__ import annotations

import concurrent.futures
import json
import random
import sys
import threading
import time

from server_harness import Server
from api_common import (
    CORPUS, OwnServerCase, ServerTestCase, prompt_ids, shared_server, start_server, wait_idle)


# ---- 4. concurrency ----------------------------------------------------------------------

def mixed_requests(count: int, seed: int, max_len: int = 600) -> list[tuple[str, dict]]:
    rng = random.Random(seed)
    lengths = [1, 2, 3, 5, 8, 13, 21, 40, 64, 100, 160, 255, 256, 257, 300, 420, 511, 600]
    lengths = [x for x in lengths if x <= max_len]
    reqs = []
    for i in range(count):
        length = lengths[i % len(lengths)] if i < len(lengths) else rng.randint(1, max_len)
        m = rng.choice([1, 2, 3, 4, 6, 8, 12, 16])
        body: dict = {"max_tokens": m, "temperature": 0, "return_token_ids": True,
                      "ignore_eos": i % 2 == 0}
        kind = i % 8
        if kind in (3, 7):  # text prompt of about `length` tokens (~4.3 chars per token)
            start = rng.randint(0, max(0, len(CORPUS) - 5 * length - 1))
            body["prompt"] = CORPUS[start:start + max(1, int(4.3 * length))]
            path = "/v1/completions"
        elif kind == 5:  # seeded sampling is deterministic too
            body.update({"prompt": prompt_ids(length, rng.randint(0, 800)),
                         "temperature": 0.8, "seed": 1000 + i})
            path = "/v1/completions"
        elif kind == 6:  # chat
            start = rng.randint(0, len(CORPUS) - 400)
            body["messages"] = [{"role": "user",
                                 "content": CORPUS[start:start + min(2000, 4 * length)]}]
            path = "/v1/chat/completions"
        else:  # token ids (different offsets so that prompts differ)
            body["prompt"] = prompt_ids(length, rng.randint(0, 800))
            path = "/v1/completions"
        reqs.append((path, body))
    return reqs


def answer_key(body: dict) -> list:
    out = []
    for c in body["choices"]:
        text = c["message"]["content"] if "message" in c else c["text"]
        out.append((c.get("token_ids"), text, c["finish_reason"]))
    return out + [body["usage"]["completion_tokens"], body["usage"]["prompt_tokens"]]


class TestConcurrency(ServerTestCase):
    def _burst(self, srv: Server, reqs):
        barrier = threading.Barrier(len(reqs), timeout=60)

        def one(k):
            path, body = reqs[k]
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                pass
            try:
                return srv.post(path, body, timeout=120)
            except OSError as e:  # connection refused / reset / timed out: a failed request
                return f"{type(e).__name__}: {e}"

        with concurrent.futures.ThreadPoolExecutor(len(reqs)) as pool:
            return list(pool.map(one, range(len(reqs))))

    def test_64_concurrent_equal_alone(self):
        reqs = mixed_requests(64, seed=2024)
        cold, main = shared_server("cold"), shared_server("main")
        alone = []
        for path, body in reqs:
            alone.append(answer_key(self.complete(body, srv=cold, path=path)))
        for name, srv in (("cache off", cold), ("cache on", main)):
            t0 = time.monotonic()
            results = self._burst(srv, reqs)
            dt = time.monotonic() - t0
            print(f"\n  64 concurrent ({name}): {dt:.1f} s", file=sys.stderr)
            for k, r in enumerate(results):
                path, body = reqs[k]
                with self.subTest(server=name, request=k):
                    self.assertNotIsInstance(r, str, f"request {k} ({path}) got no answer: {r}")
                    self.assertEqual(r.status, 200, f"{path} {json.dumps(body)[:200]}: {r!r}")
                    got = r.json()
                    if "messages" in body:
                        self.check_chat(got)
                    else:
                        self.check_completion(got)
                    self.assertEqual(answer_key(got), alone[k],
                                     f"request {k} ({path}, {json.dumps(body)[:160]}...) "
                                     f"differs from the same request run alone")
            m = wait_idle(srv)
            self.assertEqual(m.value("duality_running_sequences"), 0)
            self.assertEqual(m.value("duality_queue_depth"), 0)
            self.assertEqual(m.value("duality_slots_in_use"), 0)


# ---- 5. multi-turn from the cache --------------------------------------------------------

class TestMultiTurnCache(ServerTestCase):
    def test_completion_turns_read_only_new_tokens(self):
        main, cold = shared_server("main"), shared_server("cold")
        P = prompt_ids(70, 500)
        m = 12
        history = list(P)
        for turn, q_len in enumerate((0, 9, 5, 300)):  # the last turn crosses prefill chunks
            Q = prompt_ids(q_len, 50 + 13 * turn) if q_len else []
            prompt = history + Q
            req = {"prompt": prompt, "max_tokens": m, "temperature": 0, "ignore_eos": True,
                   "return_token_ids": True}
            before = main.metrics()
            body = self.complete(req, srv=main)
            after = main.metrics()
            u = body["usage"]
            cached = u["prompt_tokens_details"]["cached_tokens"]
            self.assertEqual(u["prompt_tokens"], len(prompt))
            if turn > 0:
                self.assertGreaterEqual(cached, len(history) - 1,
                                        f"turn {turn + 1}: cached {cached} of {len(prompt)} "
                                        f"(history {len(history)})")
                self.assertGreaterEqual(after.value("duality_cache_hits_total")
                                        - before.value("duality_cache_hits_total"), 1)
                self.assertEqual(after.value("duality_cache_hit_tokens_total")
                                 - before.value("duality_cache_hit_tokens_total"), cached)
            self.assertEqual(after.value("duality_prefill_tokens_total")
                             - before.value("duality_prefill_tokens_total"),
                             u["prompt_tokens"] - cached,
                             f"turn {turn + 1}: prefill read more than the uncached tokens")
            self.assertEqual(after.value("duality_prompt_tokens_total")
                             - before.value("duality_prompt_tokens_total"), u["prompt_tokens"])
            cold_body = self.complete(req, srv=cold)
            self.assertEqual(cold_body["usage"]["prompt_tokens_details"]["cached_tokens"], 0,
                             "--cache-memory 0 must not cache")
            self.assertEqual(body["choices"][0]["token_ids"],
                             cold_body["choices"][0]["token_ids"],
                             f"turn {turn + 1}: cached answer != cold answer")
            self.assertEqual(body["choices"][0]["text"], cold_body["choices"][0]["text"])
            history = prompt + body["choices"][0]["token_ids"]

    def test_cache_off_server_counts_no_hits(self):
        cold = shared_server("cold")
        P = prompt_ids(30, 600)
        first = self.complete({"prompt": P, "max_tokens": 4, "temperature": 0,
                               "ignore_eos": True, "return_token_ids": True}, srv=cold)
        before = cold.metrics()
        body = self.complete({"prompt": P + first["choices"][0]["token_ids"] + [13],
                              "max_tokens": 4, "temperature": 0, "ignore_eos": True}, srv=cold)
        after = cold.metrics()
        self.assertEqual(body["usage"]["prompt_tokens_details"]["cached_tokens"], 0)
        self.assertEqual(after.value("duality_cache_hits_total"),
                         before.value("duality_cache_hits_total"))
        self.assertEqual(after.value("duality_prefill_tokens_total")
                         - before.value("duality_prefill_tokens_total"),
                         body["usage"]["prompt_tokens"])

    def test_small_cache_evicts_and_stays_correct(self):
        """Interleaved conversations through a cache of 10 MB (four 17M-model states): entries are
        evicted, and every answer still equals the cache-off answer."""
        cold = shared_server("cold")
        # Host tier only (the GPU default keeps states in device slots, which never evict here).
        srv = start_server("--cache-memory", "10", "--cache-slots", "0")
        try:
            hist = {c: prompt_ids(20 + 7 * c, 30 * c) for c in range(4)}
            turns = {c: 0 for c in range(4)}
            # Two conversations at a time fit (a request may cache its prompt and its end), so
            # they hit; switching to the other pair evicts.
            for c in [0, 1, 0, 1, 2, 3, 2, 3, 0, 1, 0, 1]:
                turn = turns[c]
                turns[c] += 1
                prompt = hist[c] + (prompt_ids(5, 300 + 11 * c + turn) if turn else [])
                req = {"prompt": prompt, "max_tokens": 6, "temperature": 0,
                       "ignore_eos": True, "return_token_ids": True}
                got = self.complete(req, srv=srv)
                want = self.complete(req, srv=cold)
                self.assertEqual(got["choices"][0]["token_ids"],
                                 want["choices"][0]["token_ids"], f"conversation {c}, turn {turn}")
                hist[c] = prompt + got["choices"][0]["token_ids"]
            m = srv.metrics()
            print(f"\n  small cache: hits {m.value('duality_cache_hits_total'):.0f}, evictions "
                  f"{m.value('duality_cache_evictions_total'):.0f}, entries "
                  f"{m.value('duality_cache_entries'):.0f}, bytes "
                  f"{m.value('duality_cache_bytes'):.0f}", file=sys.stderr)
            self.assertGreater(m.value("duality_cache_evictions_total"), 0)
            self.assertGreater(m.value("duality_cache_hits_total"), 0)
            self.assertLessEqual(m.value("duality_cache_bytes"), 10 * 1024 * 1024)
            self.assertEqual(srv.stop(), 0)
        finally:
            srv.kill()

    def test_chat_three_turns(self):
        main, cold = shared_server("main"), shared_server("cold")
        users = ["Tell me about the lighthouse on the island.",
                 "Why did the light go out?",
                 "What did the fisherman say?"]
        msgs: list[dict] = [{"role": "system", "content": "You answer in plain sentences."}]
        for turn, text in enumerate(users):
            msgs.append({"role": "user", "content": text})
            req = {"messages": msgs, "max_tokens": 14, "temperature": 0, "ignore_eos": True,
                   "return_token_ids": True}
            before = main.metrics()
            body = self.chat(req, srv=main)
            after = main.metrics()
            self.check_chat(body, n=1)
            u = body["usage"]
            cached = u["prompt_tokens_details"]["cached_tokens"]
            print(f"\n  chat turn {turn + 1}: prompt {u['prompt_tokens']}, cached {cached}",
                  file=sys.stderr)
            if turn > 0:
                self.assertGreater(cached, 0, f"turn {turn + 1} read nothing from the cache")
            self.assertEqual(after.value("duality_prefill_tokens_total")
                             - before.value("duality_prefill_tokens_total"),
                             u["prompt_tokens"] - cached)
            cold_body = self.chat(req, srv=cold)
            self.assertEqual(body["choices"][0]["message"], cold_body["choices"][0]["message"],
                             f"turn {turn + 1}: cached reply != cold reply")
            self.assertEqual(body["choices"][0].get("token_ids"),
                             cold_body["choices"][0].get("token_ids"))
            msgs.append({"role": "assistant", "content": body["choices"][0]["message"]["content"]})


class TestCheckpoints(OwnServerCase):
    """--checkpoint-every: a prompt that shares only part of a long earlier prompt resumes from
    the last checkpoint inside the shared part."""
    server_args = ["--prefill-chunk", "64", "--checkpoint-every", "64"]

    def test_resume_from_checkpoint(self):
        cold = shared_server("cold")
        a = prompt_ids(200, 10)
        b = a[:150] + prompt_ids(20, 500)
        for name, prompt, want_cached in (("A", a, 0), ("B", b, 128), ("B+1", b + [13], 170)):
            req = {"prompt": prompt, "max_tokens": 6, "temperature": 0, "ignore_eos": True,
                   "return_token_ids": True}
            got = self.complete(req)
            cached = got["usage"]["prompt_tokens_details"]["cached_tokens"]
            if name == "B+1":  # the previous request's whole prompt (or more) is cached
                self.assertGreaterEqual(cached, want_cached, f"{name}: {got['usage']}")
            else:
                self.assertEqual(cached, want_cached, f"{name}: {got['usage']}")
            self.assertEqual(got["choices"][0]["token_ids"],
                             self.complete(req, srv=cold)["choices"][0]["token_ids"], name)
