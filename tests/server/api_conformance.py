"""Section 1 of the server tests: API conformance (response shapes, parameters, errors of the
OpenAI-compatible endpoints)."""

from __future__ import annotations

import json

from server_harness import parse_prometheus
from api_common import (
    SharedServerCase, cli_greedy_ids, detokenize, is_int, prompt_ids, served_name, settled_metrics,
    tokenize, vocab_sizes, wait_idle)


# ---- 1. API conformance --------------------------------------------------------------------

class TestApi(SharedServerCase):
    def test_health(self):
        r = self.srv.get("/health")
        self.assertEqual(self.ok(r, "/health"), {"status": "ok"})

    def test_models(self):
        body = self.ok(self.srv.get("/v1/models"), "/v1/models")
        self.assertEqual(body.get("object"), "list", body)
        self.assertIsInstance(body.get("data"), list, body)
        self.assertEqual(len(body["data"]), 1, body)
        m = body["data"][0]
        self.assertEqual(m.get("id"), served_name(), m)
        self.assertEqual(m.get("object"), "model", m)
        self.assertTrue(is_int(m.get("created")), m)
        self.assertEqual(m.get("owned_by"), "duality", m)

    def test_listen_line(self):
        line = self.srv.listen_line
        self.assertIn(f"(model {served_name()}, ", line)
        self.assertRegex(line, r", \d+ slots\)")

    def test_completion_text_prompt(self):
        body = self.complete({"prompt": "Once upon a time", "max_tokens": 8})
        ch = self.check_completion(body, n=1)
        self.assertGreaterEqual(body["usage"]["prompt_tokens"], 1)
        self.assertEqual(body["usage"]["prompt_tokens"], len(tokenize("Once upon a time")))
        self.assertLessEqual(body["usage"]["completion_tokens"], 8)
        if ch[0]["finish_reason"] == "length":
            self.assertEqual(body["usage"]["completion_tokens"], 8)
        self.assertNotIn("token_ids", ch[0], "token_ids only with return_token_ids")

    def test_completion_default_model_field_and_explicit_model(self):
        body = self.complete({"model": served_name(), "prompt": [510, 1263], "max_tokens": 2,
                              "temperature": 0})
        self.check_completion(body, n=1)

    def test_completion_token_ids_usage_and_length(self):
        ids = prompt_ids(17, 5)
        body = self.complete({"prompt": ids, "max_tokens": 9, "temperature": 0,
                              "ignore_eos": True, "return_token_ids": True})
        ch = self.check_completion(body, n=1)
        u = body["usage"]
        self.assertEqual(u["prompt_tokens"], 17)
        self.assertEqual(u["completion_tokens"], 9)
        self.assertEqual(ch[0]["finish_reason"], "length")
        toks = ch[0].get("token_ids")
        self.assertIsInstance(toks, list, ch[0])
        self.assertEqual(len(toks), 9)
        n_tok, _ = vocab_sizes()
        self.assertTrue(all(is_int(t) and 0 <= t < n_tok for t in toks), toks)
        self.assertEqual(ch[0]["text"], detokenize(toks), "text == decode(token_ids)")

    def test_max_tokens_gives_length(self):
        for m in (1, 5):
            body = self.complete({"prompt": "The sea", "max_tokens": m, "temperature": 0.7,
                                  "seed": 3, "ignore_eos": True, "return_token_ids": True})
            ch = self.check_completion(body, n=1)
            self.assertEqual(ch[0]["finish_reason"], "length")
            self.assertEqual(body["usage"]["completion_tokens"], m)
            self.assertEqual(len(ch[0]["token_ids"]), m)

    def test_max_tokens_null_defaults_to_16(self):
        body = self.complete({"prompt": "The sea", "max_tokens": None, "temperature": 0,
                              "ignore_eos": True})
        self.assertEqual(body["usage"]["completion_tokens"], 16)
        body = self.complete({"prompt": "The sea", "temperature": 0, "ignore_eos": True})
        self.assertEqual(body["usage"]["completion_tokens"], 16)

    def test_n_choices_and_seed_plus_index(self):
        req = {"prompt": "The old man", "max_tokens": 10, "temperature": 1.0, "seed": 11,
               "n": 3, "ignore_eos": True, "return_token_ids": True}
        body = self.complete(req)
        ch = self.check_completion(body, n=3)
        self.assertEqual(body["usage"]["completion_tokens"], 30)
        self.assertEqual(body["usage"]["completion_tokens"],
                         sum(len(c["token_ids"]) for c in ch))
        self.assertEqual(body["usage"]["prompt_tokens"], len(tokenize("The old man")))
        # choice i uses seed + i
        for i in (1, 2):
            one = self.complete({**req, "n": 1, "seed": 11 + i})
            self.assertEqual(one["choices"][0]["token_ids"], ch[i]["token_ids"],
                             f"choice {i} of seed 11 != choice 0 of seed {11 + i}")

    def test_batch_prompts(self):
        prompts = ["Once upon a time", "The old man", "In the morning"]
        req = {"prompt": prompts, "max_tokens": 6, "temperature": 0, "n": 2,
               "ignore_eos": True, "return_token_ids": True}
        body = self.complete(req)
        ch = self.check_completion(body, n=6)
        singles = [self.complete({**req, "prompt": p, "n": 1})["choices"][0] for p in prompts]
        for k, c in enumerate(ch):
            want = singles[k // 2]
            self.assertEqual(c["token_ids"], want["token_ids"], f"choice {k}")
            self.assertEqual(c["text"], want["text"], f"choice {k}")
        self.assertEqual(body["usage"]["completion_tokens"], 36)
        per_prompt = sum(len(tokenize(p)) for p in prompts)
        self.assertIn(body["usage"]["prompt_tokens"], (per_prompt, 2 * per_prompt), body["usage"])

    def test_stop_strings(self):
        ids = prompt_ids(30, 40)
        base = {"prompt": ids, "max_tokens": 40, "temperature": 0, "ignore_eos": True}
        full = self.complete(base)["choices"][0]["text"]
        self.assertGreater(len(full), 20, full)
        # A stop string from the middle of the greedy text, starting at a word.
        words = [i for i in range(8, len(full) - 6) if full[i] == " " and full[i + 1].isalnum()]
        self.assertTrue(words, full)
        start = words[len(words) // 2]
        stop = full[start:start + 4]
        cut = full.index(stop)
        for stop_field in (stop, [stop], ["zzqqxx", stop]):
            body = self.complete({**base, "stop": stop_field})
            c = self.check_completion(body, n=1)[0]
            self.assertEqual(c["text"], full[:cut], f"stop={stop_field!r}")
            self.assertEqual(c["finish_reason"], "stop")
            self.assertNotIn(stop, c["text"])
        # A stop string that never occurs changes nothing.
        body = self.complete({**base, "stop": ["zzqqxx"]})
        self.assertEqual(body["choices"][0]["text"], full)
        self.assertEqual(body["choices"][0]["finish_reason"], "length")
        # Streamed: same cut.
        res = self.srv.stream("/v1/completions", {**base, "stop": [stop], "stream": True})
        texts, fr, _ = self.check_stream(res, chat=False)
        self.assertEqual(texts[0], full[:cut])
        self.assertEqual(fr, {0: "stop"})

    def test_seeded_sampling_deterministic(self):
        req = {"prompt": "The little dog", "max_tokens": 12, "temperature": 1.0,
               "ignore_eos": True, "return_token_ids": True}
        a = self.complete({**req, "seed": 1234})["choices"][0]
        b = self.complete({**req, "seed": 1234})["choices"][0]
        self.assertEqual(a["token_ids"], b["token_ids"])
        self.assertEqual(a["text"], b["text"])
        others = {tuple(self.complete({**req, "seed": s})["choices"][0]["token_ids"])
                  for s in (1, 2, 3, 4)}
        others.add(tuple(a["token_ids"]))
        self.assertGreater(len(others), 1, "five seeds gave one and the same text")

    def test_temperature_zero_is_greedy(self):
        ids = prompt_ids(25, 100)
        req = {"prompt": ids, "max_tokens": 12, "ignore_eos": True, "return_token_ids": True}
        t0 = self.complete({**req, "temperature": 0, "seed": 1})["choices"][0]["token_ids"]
        t0b = self.complete({**req, "temperature": 0, "seed": 999})["choices"][0]["token_ids"]
        t0c = self.complete({**req, "temperature": 0})["choices"][0]["token_ids"]
        topk1 = self.complete({**req, "temperature": 1.0, "top_k": 1, "seed": 5})
        self.assertEqual(t0, t0b)
        self.assertEqual(t0, t0c)
        self.assertEqual(t0, topk1["choices"][0]["token_ids"])
        self.assertEqual(t0, cli_greedy_ids(ids, 12), "temperature 0 != CLI --greedy")

    def test_keep_alive_connection_reuse(self):
        """Several requests, one of them streamed, on one HTTP/1.1 connection (as SDKs do)."""
        conn = self.srv.connection()
        try:
            for k in range(4):
                body = {"prompt": [510 + k, 1263], "max_tokens": 3, "temperature": 0,
                        "ignore_eos": True, "stream": k == 2}
                conn.request("POST", "/v1/completions", body=json.dumps(body),
                             headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                data = r.read()
                self.assertEqual(r.status, 200, data[:300])
                if k == 2:
                    self.assertTrue(data.rstrip().endswith(b"data: [DONE]"), data[-200:])
                else:
                    self.check_completion(json.loads(data), n=1)
            conn.request("GET", "/health")
            r = conn.getresponse()
            self.assertEqual(r.status, 200, r.read())
        finally:
            conn.close()

    def test_chat_fields(self):
        req = {"messages": [{"role": "user", "content": "Hello there."}], "max_tokens": 8}
        body = self.chat(req)
        self.check_chat(body, n=1)
        self.assertGreater(body["usage"]["prompt_tokens"], 3)

    def test_chat_content_parts_equal_string(self):
        base = {"max_tokens": 6, "temperature": 0, "ignore_eos": True}
        a = self.chat({**base, "messages": [{"role": "user", "content": "Tell me a story."}]})
        b = self.chat({**base, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Tell me a story."}]}]})
        self.assertEqual(a["choices"][0]["message"]["content"],
                         b["choices"][0]["message"]["content"])
        for k in ("prompt_tokens", "completion_tokens"):
            self.assertEqual(a["usage"][k], b["usage"][k], k)

    def test_chat_max_completion_tokens(self):
        body = self.chat({"messages": [{"role": "user", "content": "Hi"}],
                          "max_completion_tokens": 5, "temperature": 0, "ignore_eos": True})
        ch = self.check_chat(body, n=1)
        self.assertEqual(ch[0]["finish_reason"], "length")
        self.assertEqual(body["usage"]["completion_tokens"], 5)

    def test_chat_n_and_seed(self):
        req = {"messages": [{"role": "system", "content": "You tell stories."},
                            {"role": "user", "content": "Begin."}],
               "max_tokens": 6, "n": 2, "temperature": 0.9, "seed": 77, "ignore_eos": True}
        a = self.chat(req)
        self.check_chat(a, n=2)
        self.assertEqual(a["usage"]["completion_tokens"], 12)
        b = self.chat(req)
        self.assertEqual([c["message"] for c in a["choices"]],
                         [c["message"] for c in b["choices"]])
        c1 = self.chat({**req, "n": 1, "seed": 78})
        self.assertEqual(c1["choices"][0]["message"], a["choices"][1]["message"])

    def test_chat_stop_string(self):
        base = {"messages": [{"role": "user", "content": "Describe the harbour."}],
                "max_tokens": 30, "temperature": 0, "ignore_eos": True}
        full = self.chat(base)["choices"][0]["message"]["content"]
        words = [i for i in range(4, len(full) - 5) if full[i] == " " and full[i + 1].isalnum()]
        if not words:
            self.skipTest(f"no word boundary in {full!r}")
        stop = full[words[len(words) // 2]:words[len(words) // 2] + 4]
        body = self.chat({**base, "stop": stop})
        c = self.check_chat(body, n=1)[0]
        self.assertEqual(c["message"]["content"], full[:full.index(stop)])
        self.assertEqual(c["finish_reason"], "stop")

    def test_metrics_format_and_counters(self):
        r = self.srv.get("/metrics")
        self.assertEqual(r.status, 200, r)
        self.assertIn("text/plain", r.content_type)
        m = parse_prometheus(r.text)
        names = {
            "duality_http_requests_total": "counter",
            "duality_requests_finished_total": "counter",
            "duality_prompt_tokens_total": "counter",
            "duality_prefill_tokens_total": "counter",
            "duality_generation_tokens_total": "counter",
            "duality_engine_steps_total": "counter",
            "duality_queue_depth": "gauge",
            "duality_running_sequences": "gauge",
            "duality_slots_in_use": "gauge",
            "duality_slots_total": "gauge",
            "duality_batch_size": "histogram",
            "duality_step_tokens": "histogram",
            "duality_step_seconds": "histogram",
            "duality_time_to_first_token_seconds": "histogram",
            "duality_inter_token_latency_seconds": "histogram",
            "duality_request_duration_seconds": "histogram",
            "duality_cache_hits_total": "counter",
            "duality_cache_misses_total": "counter",
            "duality_cache_evictions_total": "counter",
            "duality_cache_hit_tokens_total": "counter",
            "duality_cache_entries": "gauge",
            "duality_cache_bytes": "gauge",
        }
        for name, typ in names.items():
            family = name[:-len("_total")] if name.endswith("_total") else name
            declared = m.types.get(name) or m.types.get(family)
            self.assertEqual(declared, typ, f"# TYPE of {name}")
            if typ == "histogram":
                for suffix in ("_bucket", "_sum", "_count"):
                    self.assertTrue(m.has(name + suffix), f"{name}{suffix} missing")
                self.assertTrue(any(n == name + "_bucket" and ls.get("le") == "+Inf"
                                    for n, ls, _ in m.series), f"{name} has no +Inf bucket")
            elif name not in ("duality_http_requests_total", "duality_requests_finished_total"):
                self.assertTrue(m.has(name), f"{name} missing")
        for name, typ in names.items():
            if typ != "histogram":
                continue
            buckets = sorted(((float(ls["le"]), v) for n, ls, v in m.series
                              if n == name + "_bucket"), key=lambda x: x[0])
            counts = [v for _, v in buckets]
            self.assertEqual(counts, sorted(counts), f"{name} buckets are not cumulative")
            self.assertEqual(buckets[-1][0], float("inf"))
            self.assertEqual(buckets[-1][1], m.value(name + "_count"), f"{name} +Inf != _count")
        slots = int(self.srv.listen_line.rsplit(", ", 1)[1].split()[0])
        self.assertEqual(m.value("duality_slots_total"), slots)

        ids = prompt_ids(13, 200)
        before = settled_metrics(self.srv)
        body = self.complete({"prompt": ids, "max_tokens": 7, "temperature": 0,
                              "ignore_eos": True})
        after = settled_metrics(self.srv)

        def delta(name, **labels):
            return after.value(name, **labels) - before.value(name, **labels)

        self.assertEqual(delta("duality_http_requests_total", path="/v1/completions", code="200"),
                         1)
        self.assertEqual(delta("duality_requests_finished_total", reason="length"), 1)
        self.assertEqual(delta("duality_requests_finished_total"), 1)
        self.assertEqual(delta("duality_prompt_tokens_total"), 13)
        self.assertEqual(delta("duality_prefill_tokens_total"),
                         13 - body["usage"]["prompt_tokens_details"]["cached_tokens"])
        self.assertEqual(delta("duality_generation_tokens_total"), 7)
        self.assertEqual(delta("duality_time_to_first_token_seconds_count"), 1)
        self.assertEqual(delta("duality_request_duration_seconds_count"), 1)
        self.assertGreaterEqual(delta("duality_inter_token_latency_seconds_count"), 6)
        self.assertGreaterEqual(delta("duality_batch_size_count"), 1)
        idle = wait_idle(self.srv)
        self.assertEqual(idle.value("duality_running_sequences"), 0)
        self.assertEqual(idle.value("duality_queue_depth"), 0)
        self.assertEqual(idle.value("duality_slots_in_use"), 0)

        # A stop string found in the text ends the request as "stop", in the metrics too (it
        # was counted as "cancelled").
        before = settled_metrics(self.srv)
        body = self.complete({"prompt": "Once upon a time", "max_tokens": 64, "temperature": 0,
                              "stop": ["so gl"]})
        self.assertEqual(body["choices"][0]["finish_reason"], "stop", body)
        after = settled_metrics(self.srv)
        self.assertEqual(delta("duality_requests_finished_total", reason="stop"), 1)
        self.assertEqual(delta("duality_requests_finished_total", reason="cancelled"), 0)
