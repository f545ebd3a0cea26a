"""Section 3b of the server tests: log-probabilities, against the CLI and the perplexity
reference."""

from __future__ import annotations

import json
import math
import os
import sys

from server_harness import stream_texts
from api_common import (
    CONFIG, REPO, SharedServerCase, detokenize, is_num, model_dir, prompt_ids, run_cli, vocab_sizes)


# ---- 3b. log-probabilities -----------------------------------------------------------------

EVAL_DIR = os.environ.get("DUALITY_EVAL_DIR",
                          os.path.join(os.path.dirname(REPO), "shared", "data", "eval"))
PERPLEXITY_REFERENCE = os.path.join(REPO, "tests", "model", "perplexity_prefix_reference.json")


def f32_model() -> bool:
    """Whether the server computes in f32: always on the CPU; on the GPU with DUALITY_DTYPE=f32
    (the server's default there is bf16)."""
    return CONFIG["device"] == "cpu" or os.environ.get("DUALITY_DTYPE", "bf16") == "f32"


def paths_agree() -> float:
    """How far a token's log-probability may move between the decode step and the chunked
    prefill: f32 rounding; 16-bit GPU activations round the two paths differently
    (docs/numerics.md): 0.003-0.007 seen in bf16 on an H200."""
    return 1e-3 if f32_model() else 5e-2


class TestLogprobs(SharedServerCase):
    """`logprobs`, `top_logprobs` and `echo` (docs/server.md): the shapes OpenAI defines, the
    prompt's scores against transformers' perplexity, and the decode and prefill paths against
    each other."""
    C, CH = "/v1/completions", "/v1/chat/completions"

    def check_completion_logprobs(self, choice, n_top):
        lp = choice.get("logprobs")
        self.assertIsInstance(lp, dict, choice)
        tokens, values = lp["tokens"], lp["token_logprobs"]
        tops, offsets = lp["top_logprobs"], lp["text_offset"]
        self.assertTrue(len(tokens) == len(values) == len(tops) == len(offsets), lp)
        for i, (tok, v, top) in enumerate(zip(tokens, values, tops)):
            self.assertIsInstance(tok, str)
            if v is None:  # an echoed prompt's first token
                self.assertEqual(i, 0, lp)
                self.assertIsNone(top, lp)
                continue
            self.assertTrue(is_num(v) and v <= 0, lp)
            self.assertIsInstance(top, dict, lp)
            self.assertIn(tok, top, "the chosen token is always among top_logprobs")
            self.assertEqual(top[tok], v)
            self.assertLessEqual(len(top), n_top + 1, top)
            self.assertLessEqual(sum(math.exp(x) for x in top.values()), 1 + 1e-5, top)
        for i in range(1, len(offsets)):
            self.assertEqual(offsets[i] - offsets[i - 1], len(tokens[i - 1]), lp)
        return lp

    def test_completion_logprobs_greedy_is_the_top(self):
        body = self.complete({"prompt": prompt_ids(30, 40), "max_tokens": 10, "temperature": 0,
                              "ignore_eos": True, "logprobs": 3, "return_token_ids": True})
        ch = body["choices"][0]
        lp = self.check_completion_logprobs(ch, 3)
        self.assertEqual(len(lp["tokens"]), 10)
        self.assertEqual(lp["tokens"], [detokenize([t]) for t in ch["token_ids"]])
        self.assertEqual("".join(lp["tokens"]), ch["text"])
        self.assertEqual(lp["text_offset"][0], 0)
        for v, top in zip(lp["token_logprobs"], lp["top_logprobs"]):
            self.assertEqual(v, max(top.values()), "greedy takes the most likely token")
            self.assertGreaterEqual(len(top), 3)
        # Sampled tokens are scored too (not always the top), and no logprobs means null.
        body = self.complete({"prompt": "The storm", "max_tokens": 12, "temperature": 1.5,
                              "seed": 5, "ignore_eos": True, "logprobs": 0})
        lp = self.check_completion_logprobs(body["choices"][0], 0)
        self.assertEqual(len(lp["tokens"]), 12)
        self.assertTrue(all(len(t) == 1 for t in lp["top_logprobs"]), lp)
        body = self.complete({"prompt": "The storm", "max_tokens": 2})
        self.assertIsNone(body["choices"][0]["logprobs"])

    def test_echo_scores_the_prompt_as_decoding_scored_it(self):
        ids = prompt_ids(40, 120)
        gen = self.complete({"prompt": ids, "max_tokens": 6, "temperature": 0,
                             "ignore_eos": True, "logprobs": 1, "return_token_ids": True})
        out = gen["choices"][0]["token_ids"]
        generated = gen["choices"][0]["logprobs"]["token_logprobs"]
        full = ids + out
        for attempt in range(2):  # the second could find the state cached: it must not use it
            body = self.complete({"prompt": full, "max_tokens": 0, "echo": True,
                                  "logprobs": 1})
            ch = body["choices"][0]
            self.assertEqual(ch["finish_reason"], "length")
            self.assertEqual(ch["text"], detokenize(full))
            self.assertEqual(body["usage"]["completion_tokens"], 0)
            self.assertEqual(body["usage"]["prompt_tokens_details"]["cached_tokens"], 0,
                             "a cached prefix has no logits to score")
            lp = self.check_completion_logprobs(ch, 1)
            self.assertEqual(len(lp["tokens"]), len(full))
            self.assertIsNone(lp["token_logprobs"][0])
            # The chunked prefill's scores of the generated tokens against the decode steps'.
            for a, b in zip(lp["token_logprobs"][len(ids):], generated):
                self.assertAlmostEqual(a, b, delta=paths_agree())
        # echo with generation: the prompt's entries, then the new tokens'.
        body = self.complete({"prompt": ids, "max_tokens": 6, "temperature": 0, "echo": True,
                              "ignore_eos": True, "logprobs": 1})
        ch = body["choices"][0]
        self.assertTrue(ch["text"].startswith(detokenize(ids)), ch["text"][:200])
        self.assertEqual(len(ch["logprobs"]["tokens"]), len(ids) + 6)
        for a, b in zip(ch["logprobs"]["token_logprobs"][len(ids):], generated):
            self.assertAlmostEqual(a, b, delta=paths_agree())
        # echo without logprobs repeats the prompt text only.
        body = self.complete({"prompt": "Once upon a time", "max_tokens": 3, "echo": True})
        self.assertTrue(body["choices"][0]["text"].startswith("Once upon a time"))
        self.assertIsNone(body["choices"][0]["logprobs"])

    def test_echo_perplexity_matches_transformers(self):
        """The prompt scores of the first 48 windows of 1,024 tokens of gutenberg-valid against
        the perplexity transformers measured on them (tests/model/perplexity_prefix_reference.json,
        float32 on a GPU), within 0.01% as `duality perplexity` is checked."""
        with open(PERPLEXITY_REFERENCE, encoding="utf-8") as f:
            ref = json.load(f)
        want = ref["files"]["gutenberg-valid.txt"]
        path = os.path.join(EVAL_DIR, "gutenberg-valid.txt")
        self.assertTrue(os.path.exists(path), f"{path} is missing (set DUALITY_EVAL_DIR)")
        ids = json.loads(run_cli("tokenize", "--model", model_dir(), "--file", path, "--json"))
        C, W = ref["context"], ref["windows"]
        windows = [ids[w * C:(w + 1) * C] for w in range(W)]
        # (about 20 s on 2 CPU cores; minutes where they are shared)
        body = self.ok(self.srv.post(self.C, {"prompt": windows, "max_tokens": 0, "echo": True,
                                              "logprobs": 0}, timeout=900), "48 windows")
        nll, scored = 0.0, 0
        for ch in body["choices"]:
            values = ch["logprobs"]["token_logprobs"]
            self.assertEqual(len(values), C)
            nll -= sum(values[1:])
            scored += C - 1
        self.assertEqual(scored, want["scored_tokens"])
        ppl = math.exp(nll / scored)
        print(f"\n  echo perplexity {ppl:.5f}, transformers {want['ppl']:.5f}", file=sys.stderr)
        # f32: within 0.01%, as `duality perplexity` is checked; bf16 GPU activations: 0.2%
        # (56.36847 against 56.36585 on an H200).
        self.assertLess(abs(ppl - want["ppl"]) / want["ppl"], 1e-4 if f32_model() else 2e-3)

    def test_chat_logprobs(self):
        msgs = [{"role": "user", "content": "What did the keeper see?"}]
        body = self.chat({"messages": msgs, "max_tokens": 8, "temperature": 0,
                          "ignore_eos": True, "logprobs": True, "top_logprobs": 2})
        ch = body["choices"][0]
        content = ch["logprobs"]["content"]
        self.assertEqual(len(content), body["usage"]["completion_tokens"])
        joined = b"".join(bytes(e["bytes"]) for e in content).decode("utf-8", "replace")
        # (the plain template drops one leading space of the answer: docs/server.md)
        self.assertIn(ch["message"]["content"], (joined, joined[1:]), content)
        for e in content:
            self.assertEqual(set(e), {"token", "logprob", "bytes", "top_logprobs"}, e)
            top = e["top_logprobs"]
            self.assertEqual(len(top), 2, e)
            self.assertEqual(top[0]["logprob"], e["logprob"], "greedy: the most likely")
            self.assertGreaterEqual(top[0]["logprob"], top[1]["logprob"], e)
            for t in top:
                self.assertEqual(bytes(t["bytes"]).decode("utf-8", "replace"), t["token"], t)
        body = self.chat({"messages": msgs, "max_tokens": 3, "logprobs": True})
        for e in body["choices"][0]["logprobs"]["content"]:
            self.assertEqual(e["top_logprobs"], [])
        body = self.chat({"messages": msgs, "max_tokens": 3, "logprobs": False})
        self.assertIsNone(body["choices"][0]["logprobs"])

    def test_stream_logprobs_equal_plain(self):
        for path, req in (
            (self.C, {"prompt": prompt_ids(20, 7), "max_tokens": 9, "temperature": 0,
                      "ignore_eos": True, "logprobs": 2, "echo": True}),
            (self.CH, {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 9,
                       "temperature": 0, "ignore_eos": True, "logprobs": True,
                       "top_logprobs": 1}),
        ):
            with self.subTest(path=path):
                plain = self.complete(req, path=path)["choices"][0]["logprobs"]
                res = self.srv.stream(path, {**req, "stream": True})
                self.assertTrue(res.done, res)
                merged: dict[str, list] = {}
                for ev in res.events:
                    for c in ev.get("choices") or []:
                        for k, v in (c.get("logprobs") or {}).items():
                            merged.setdefault(k, []).extend(v)
                self.assertEqual(merged, plain)

    def test_logit_bias_steers_bans_and_leaves_logprobs_raw(self):
        base = {"prompt": prompt_ids(12, 60), "max_tokens": 6, "temperature": 0,
                "ignore_eos": True, "return_token_ids": True}
        plain = self.complete(base)["choices"][0]["token_ids"]
        forced = self.complete({**base, "logit_bias": {"510": 100}})["choices"][0]
        self.assertEqual(forced["token_ids"], [510] * 6)
        banned = self.complete({**base, "logit_bias": {str(plain[0]): -100}})["choices"][0]
        self.assertNotIn(plain[0], banned["token_ids"])
        forced_text = detokenize([510] * 6)
        for path, body, want in (
                (self.C, {**base, "stream": True, "logit_bias": {"510": 100}}, forced_text),
                (self.CH, {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 6,
                           "temperature": 0, "ignore_eos": True, "stream": True,
                           "logit_bias": {"510": 100}}, forced_text.lstrip(" "))):
            res = self.srv.stream(path, body)
            self.assertTrue(res.done, res)
            self.assertEqual(stream_texts(res.events).get(0), want)
        # The scores stay the model's own: a bias changes the choice, not the log-probability.
        scored = self.complete({**base, "logprobs": 0, "logit_bias": {"510": 100}})
        lp = scored["choices"][0]["logprobs"]["token_logprobs"]
        echo = self.complete({"prompt": base["prompt"] + [510] * 6, "max_tokens": 0,
                              "echo": True, "logprobs": 0})
        for a, b in zip(lp, echo["choices"][0]["logprobs"]["token_logprobs"][12:]):
            self.assertAlmostEqual(a, b, delta=paths_agree())
        n_tok, _ = vocab_sizes()
        for bad in ({"x": 1}, {"-1": 1}, {"1.5": 1}, {"510": 101}, {"510": "1"}, {"0510": 1},
                    {"99999999": 1}, {str(n_tok): 1}, {str(i): 1 for i in range(301)}, [1],
                    "510"):
            with self.subTest(logit_bias=str(bad)[:40]):
                self.assert_error(self.srv.post(self.C, {**base, "logit_bias": bad}), 400,
                                  "logit_bias")

    def test_stop_token_ids_end_after_the_id_without_its_text(self):
        base = {"prompt": prompt_ids(16, 200), "max_tokens": 12, "temperature": 0,
                "ignore_eos": True, "return_token_ids": True}
        plain = self.complete(base)["choices"][0]["token_ids"]
        k = next(i for i in range(3, len(plain)) if plain[i] not in plain[:i])
        body = self.complete({**base, "stop_token_ids": [plain[k], 3]})
        ch = body["choices"][0]
        self.assertEqual(ch["token_ids"], plain[:k + 1])
        self.assertEqual(ch["text"], detokenize(plain[:k]))
        self.assertEqual(ch["finish_reason"], "stop")
        self.assertEqual(body["usage"]["completion_tokens"], k + 1)
        res = self.srv.stream(self.C, {**base, "stop_token_ids": [plain[k]], "stream": True})
        self.assertEqual(stream_texts(res.events).get(0), ch["text"])
        for bad in ([-1], [10**9], "5", [1.5], list(range(65))):
            with self.subTest(stop_token_ids=str(bad)[:30]):
                self.assert_error(self.srv.post(self.C, {**base, "stop_token_ids": bad}), 400,
                                  "stop_token_ids")

    def test_vllm_extensions_that_would_change_the_output_are_refused(self):
        base = {"prompt": "x", "max_tokens": 2}
        for field, value in (("min_tokens", 3), ("bad_words", ["a"]), ("prompt_logprobs", 1),
                             ("guided_json", {}), ("guided_choice", ["a"]),
                             ("allowed_token_ids", [1]), ("use_beam_search", True),
                             ("include_stop_str_in_output", True),
                             ("skip_special_tokens", False),
                             ("response_format", {"type": "json_object"}),
                             ("tool_choice", "auto"), ("chat_template", "{{ x }}"),
                             ("chat_template_kwargs", {"a": 1}),
                             ("continue_final_message", True), ("truncate_prompt_tokens", 5)):
            with self.subTest(field=field):
                self.assert_error(self.srv.post(self.C, {**base, field: value}), 400, field)
                chat = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
                self.assert_error(self.srv.post(self.CH, {**chat, field: value}), 400, field)
        for field, value in (("min_tokens", 0), ("bad_words", []), ("use_beam_search", False),
                             ("skip_special_tokens", True), ("response_format", {"type": "text"}),
                             ("tool_choice", "none"), ("stop_token_ids", []),
                             ("chat_template_kwargs", {})):
            with self.subTest(field=field, neutral=True):
                self.check_completion(self.complete({**base, field: value}))

    def test_bad_logprobs_requests(self):
        base = {"prompt": "x", "max_tokens": 2}
        cbase = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
        for path, extra, field in (
            (self.C, {"logprobs": 21}, "logprobs"),
            (self.C, {"logprobs": -1}, "logprobs"),
            (self.C, {"logprobs": True}, "logprobs"),
            (self.C, {"top_logprobs": 2}, "top_logprobs"),
            (self.C, {"echo": 1}, "echo"),
            (self.C, {"max_tokens": 0}, "max_tokens"),
            (self.CH, {"logprobs": 2}, "logprobs"),
            (self.CH, {"top_logprobs": 2}, "top_logprobs"),
            (self.CH, {"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
            (self.CH, {"echo": True}, "echo"),
        ):
            with self.subTest(path=path, extra=extra):
                body = {**(cbase if path == self.CH else base), **extra}
                self.assert_error(self.srv.post(path, body), 400, field)
