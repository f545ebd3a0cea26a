"""Sections 2-3a of the server tests: streaming, the CLI as ground truth, the token endpoints."""

from __future__ import annotations

import json
import time

from server_harness import stream_texts, stream_token_ids
from api_common import (
    CORPUS, SharedServerCase, cli_greedy_ids, cli_greedy_text, detokenize, has_chat_template,
    is_int, plain_chat_prompt, prompt_ids, tokenize, vocab_sizes)


# ---- 2. streaming ------------------------------------------------------------------------

class TestStreaming(SharedServerCase):
    def _pair(self, path, req, chat, n=1):
        plain = self.complete(req, path=path)
        res = self.srv.stream(path, {**req, "stream": True})
        texts, fr, _ = self.check_stream(res, chat=chat, n=n)
        if chat:
            want = [c["message"]["content"] for c in plain["choices"]]
        else:
            want = [c["text"] for c in plain["choices"]]
        self.assertEqual(texts, want, f"streamed != non-streamed for {json.dumps(req)[:200]}")
        self.assertEqual(fr, {c["index"]: c["finish_reason"] for c in plain["choices"]})
        return plain, res

    def test_completions_stream_equals_plain(self):
        for req in (
            {"prompt": "Once upon a time", "max_tokens": 20, "temperature": 0},
            {"prompt": prompt_ids(40, 300), "max_tokens": 24, "temperature": 0,
             "ignore_eos": True},
            {"prompt": "The storm", "max_tokens": 20, "temperature": 0.9, "seed": 42,
             "top_p": 0.9, "ignore_eos": True},
            {"prompt": "The storm", "max_tokens": 12, "temperature": 1.0, "seed": 7, "n": 2,
             "ignore_eos": True},
            {"prompt": ["One", "Two"], "max_tokens": 8, "temperature": 0, "ignore_eos": True},
            # multi-byte and broken UTF-8 output (seen with this seed: an incomplete character
            # before a complete one): the streamed pieces still add up to the same text
            {"prompt": "東京の天気は今日、とても", "max_tokens": 24, "temperature": 1.5,
             "seed": 3, "ignore_eos": True},
            {"prompt": "Ünïcödé — “quotes” …", "max_tokens": 16, "temperature": 1.2,
             "seed": 8, "ignore_eos": True, "stop": ["\n\n"]},
        ):
            with self.subTest(req=json.dumps(req)[:120]):
                batch = len(req["prompt"]) if isinstance(req["prompt"], list) and \
                    isinstance(req["prompt"][0], str) else 1
                n = batch * req.get("n", 1)
                self._pair("/v1/completions", req, chat=False, n=n)

    def test_chat_stream_equals_plain(self):
        msgs = [{"role": "user", "content": "What did the keeper see?"}]
        for req in (
            {"messages": msgs, "max_tokens": 20, "temperature": 0},
            {"messages": msgs, "max_tokens": 20, "temperature": 0, "ignore_eos": True},
            {"messages": msgs, "max_tokens": 16, "temperature": 0.8, "seed": 9,
             "ignore_eos": True},
            {"messages": msgs, "max_tokens": 10, "temperature": 1.0, "seed": 3, "n": 2,
             "ignore_eos": True},
        ):
            with self.subTest(req=json.dumps(req)[:120]):
                self._pair("/v1/chat/completions", req, chat=True, n=req.get("n", 1))

    def test_stream_token_ids_when_present(self):
        req = {"prompt": prompt_ids(30, 420), "max_tokens": 14, "temperature": 0,
               "ignore_eos": True, "return_token_ids": True, "n": 1}
        plain = self.complete(req)
        res = self.srv.stream("/v1/completions", {**req, "stream": True})
        self.check_stream(res, chat=False)
        ids = stream_token_ids(res.events)
        if not ids:
            self.skipTest("streamed chunks carry no token_ids (not required by the spec)")
        self.assertEqual(ids.get(0), plain["choices"][0]["token_ids"])

    def test_include_usage(self):
        for path, req, chat in (
            ("/v1/completions", {"prompt": prompt_ids(21, 50), "max_tokens": 9,
                                 "temperature": 0, "ignore_eos": True}, False),
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}],
                                      "max_tokens": 9, "temperature": 0, "ignore_eos": True},
             True),
        ):
            with self.subTest(path=path):
                plain = self.complete(req, path=path)
                res = self.srv.stream(path, {**req, "stream": True,
                                             "stream_options": {"include_usage": True}})
                _, _, usage = self.check_stream(res, chat=chat, include_usage=True)
                self.assertEqual(res.events[-1]["choices"], [])
                for k in ("prompt_tokens", "completion_tokens", "total_tokens"):
                    self.assertEqual(usage[k], plain["usage"][k], k)
                self.assertEqual(usage["completion_tokens"], 9)
                # include_usage false: no usage chunk.
                res = self.srv.stream(path, {**req, "stream": True,
                                             "stream_options": {"include_usage": False}})
                self.check_stream(res, chat=chat, include_usage=False)

    def test_http10_stream_is_unchunked_and_closes_after_done(self):
        body = json.dumps({"prompt": [510, 1263], "max_tokens": 5, "temperature": 0,
                           "ignore_eos": True, "stream": True}).encode()
        want = self.complete({"prompt": [510, 1263], "max_tokens": 5, "temperature": 0,
                              "ignore_eos": True})["choices"][0]["text"]
        for extra in ("", "Connection: Keep-Alive\r\n"):
            with self.subTest(extra=extra):
                head = (f"POST /v1/completions HTTP/1.0\r\n{extra}Content-Type: application/json"
                        f"\r\nContent-Length: {len(body)}\r\n\r\n").encode()
                started = time.monotonic()
                raw = self.srv.raw_exchange(head + body, timeout=60)
                self.assertLess(time.monotonic() - started, 50, "the connection stayed open")
                top, _, payload = raw.partition(b"\r\n\r\n")
                headers = top.decode("latin-1").lower()
                self.assertTrue(headers.startswith("http/1.1 200"), raw[:300])
                self.assertNotIn("transfer-encoding", headers)
                self.assertIn("connection: close", headers)
                self.assertIn("text/event-stream", headers)
                self.assertTrue(payload.endswith(b"data: [DONE]\n\n"), payload[-200:])
                events = [json.loads(chunk[len(b"data: "):])
                          for chunk in payload.split(b"\n\n")
                          if chunk.startswith(b"data: {")]
                self.assertEqual(stream_texts(events).get(0), want, payload[:500])

    def test_stream_error_before_start_is_http_error(self):
        r = self.srv.post("/v1/completions", {"prompt": "x", "max_tokens": 0, "stream": True})
        self.assert_error(r, 400, "max_tokens")
        self.assertIn("application/json", r.content_type)


# ---- 3. ground truth: the CLI ------------------------------------------------------------

class TestGroundTruth(SharedServerCase):
    def test_greedy_equals_cli(self):
        n = 20
        cases = [(1, 0), (7, 3), (64, 90), (300, 10), (530, 400)]
        for length, offset in cases:
            ids = prompt_ids(length, offset)
            with self.subTest(prompt_len=length):
                body = self.complete({"prompt": ids, "max_tokens": n, "temperature": 0,
                                      "ignore_eos": True, "return_token_ids": True})
                self.assertEqual(body["usage"]["prompt_tokens"], length)
                got = body["choices"][0]["token_ids"]
                want = cli_greedy_ids(ids, n)
                self.assertEqual(got, want, f"prompt of {length} ids: server != CLI")

    def test_greedy_text_equals_cli(self):
        ids = prompt_ids(48, 150)
        body = self.complete({"prompt": ids, "max_tokens": 24, "temperature": 0,
                              "ignore_eos": True})
        self.assertEqual(body["choices"][0]["text"], cli_greedy_text(ids, 24))

    def test_chat_plain_template_equals_cli(self):
        if has_chat_template():
            self.skipTest("the model has a chat_template; the plain format does not apply")
        msgs = [{"role": "system", "content": "You are a keeper of lights."},
                {"role": "user", "content": "What happened in the storm?"},
                {"role": "assistant", "content": "The light went out."},
                {"role": "user", "content": "And then?"}]
        ids = tokenize(plain_chat_prompt(msgs))
        body = self.chat({"messages": msgs, "max_tokens": 16, "temperature": 0,
                          "ignore_eos": True, "return_token_ids": True})
        self.assertEqual(body["usage"]["prompt_tokens"], len(ids),
                         "prompt != the documented plain chat format")
        want = cli_greedy_ids(ids, 16)
        got = body["choices"][0].get("token_ids")
        if got is not None:
            self.assertEqual(got, want)
        text = detokenize(want)
        if text.startswith(" "):
            text = text[1:]
        self.assertEqual(body["choices"][0]["message"]["content"], text)


# ---- 3a. token endpoints -------------------------------------------------------------------

class TestTokenEndpoints(SharedServerCase):
    """POST /tokenize and /detokenize (vLLM's extensions), against `duality tokenize` and the
    prompt the chat endpoint counts."""

    def test_tokenize_text_equals_the_cli(self):
        text = CORPUS[:700] + " \u00e9\u4e2d\U0001F600"
        body = self.ok(self.srv.post("/tokenize", {"prompt": text}), "/tokenize")
        self.assertEqual(body["tokens"], tokenize(text))
        self.assertEqual(body["count"], len(body["tokens"]))
        self.assertTrue(is_int(body["max_model_len"]) and body["max_model_len"] > 0, body)
        back = self.ok(self.srv.post("/detokenize", {"tokens": body["tokens"]}), "/detokenize")
        self.assertEqual(back, {"prompt": text})
        empty = self.ok(self.srv.post("/tokenize", {"prompt": ""}), "/tokenize")
        self.assertEqual((empty["tokens"], empty["count"]), ([], 0))

    def test_tokenize_messages_counts_the_chat_prompt(self):
        msgs = [{"role": "user", "content": "What did the keeper see?"}]
        body = self.ok(self.srv.post("/tokenize", {"messages": msgs}), "/tokenize")
        chat = self.chat({"messages": msgs, "max_tokens": 1})
        self.assertEqual(body["count"], chat["usage"]["prompt_tokens"])
        bare = self.ok(self.srv.post("/tokenize", {"messages": msgs,
                                                   "add_generation_prompt": False}), "/tokenize")
        self.assertLess(bare["count"], body["count"])  # (not a prefix: BPE merges across it)
        # The chat endpoint takes add_generation_prompt too, and counts the same prompt.
        chat = self.chat({"messages": msgs, "max_tokens": 1, "add_generation_prompt": False})
        self.assertEqual(chat["usage"]["prompt_tokens"], bare["count"])

    def test_token_endpoints_bad_input(self):
        n_tok, vocab = vocab_sizes()
        for path, req, field in (
            ("/tokenize", {}, "prompt"),
            ("/tokenize", {"prompt": "x", "messages": [{"role": "user", "content": "x"}]},
             "messages"),
            ("/tokenize", {"prompt": ["x"]}, "prompt"),
            ("/tokenize", {"prompt": 5}, "prompt"),
            ("/tokenize", {"messages": []}, "messages"),
            ("/tokenize", {"messages": [{"role": "user", "content": "x"}],
                           "add_generation_prompt": "yes"}, "add_generation_prompt"),
            ("/detokenize", {}, "tokens"),
            ("/detokenize", {"tokens": "abc"}, "tokens"),
            ("/detokenize", {"tokens": [1, -1]}, "tokens"),
            ("/detokenize", {"tokens": [vocab]}, "tokens"),
            ("/detokenize", {"tokens": [n_tok]}, "tokens"),
            ("/detokenize", {"tokens": [1.5]}, "tokens"),
        ):
            with self.subTest(path=path, req=req):
                self.assert_error(self.srv.post(path, req), 400, field)
        self.assert_error(self.srv.post("/tokenize", b"{not json"), 400)
        self.assert_error(self.srv.post("/tokenize", {"prompt": "x", "model": "other"}), 404,
                          code="model_not_found")
        r = self.srv.get("/tokenize")
        self.assert_error(r, 405)
        self.assertEqual(r.headers.get("allow"), "POST")
        self.ok(self.srv.post("/tokenize", {"prompt": "x"}), "/tokenize")
        m = self.srv.metrics()
        self.assertGreater(m.value("duality_http_requests_total", path="/tokenize", code="200"),
                           0)
