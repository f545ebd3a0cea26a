"""Sections 6-8 of the server tests: limits, workers, served names, template limits, graceful
shutdown and the bounded load test."""

from __future__ import annotations

import concurrent.futures
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time

from server_harness import Server, percentile, stream_finish_reasons, stream_texts
from api_common import (
    CONFIG, CORPUS, OwnServerCase, ServerTestCase, SharedServerCase, duality, model_dir,
    prompt_ids, served_name, start_server, wait_idle)


class TestLimits(OwnServerCase):
    """--request-timeout ("timeout" finish reason) and --max-queue (HTTP 503)."""
    # max_tokens far beyond what even a GPU generates in 3 s, so the timeout always comes first.
    server_args = ["--request-timeout", "3", "--max-seqs", "1", "--max-queue", "1",
                   "--max-tokens-limit", "1000000"]

    def wait_for(self, cond, what, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            m = self.srv.metrics()
            if cond(m):
                return m
            if time.monotonic() > deadline:
                self.fail(f"{what} not reached in {timeout:.0f} s")
            time.sleep(0.05)

    def test_request_timeout(self):
        before = self.srv.metrics().value("duality_requests_finished_total", reason="timeout")
        body = self.complete({"prompt": [510, 1263], "max_tokens": 1000000, "temperature": 0,
                              "ignore_eos": True})
        c = self.check_completion_timeout(body)
        self.assertLess(body["usage"]["completion_tokens"], 1000000)
        self.assertEqual(c["finish_reason"], "timeout")
        after = wait_idle(self.srv)
        self.assertEqual(after.value("duality_requests_finished_total", reason="timeout"),
                         before + 1)

    def test_echo_that_times_out_before_its_prompt_is_scored_fails(self):
        """A prompt scored more slowly than --request-timeout: an error naming why, never a 200
        with holes in token_logprobs (a GPU may finish in time: then every entry is there)."""
        ids = prompt_ids(32768)
        r = self.srv.post("/v1/completions", {"prompt": ids, "max_tokens": 0, "echo": True,
                                              "logprobs": 5}, timeout=120)
        if r.status == 200:
            values = r.json()["choices"][0]["logprobs"]["token_logprobs"]
            self.assertEqual(len(values), len(ids))
            self.assertTrue(all(v is not None for v in values[1:]))
        else:
            self.assert_error(r, 500)
            self.assertIn("before its prompt was scored", r.json()["error"]["message"])
        wait_idle(self.srv)

    def check_completion_timeout(self, body):
        self.check_common(body, "cmpl-", "text_completion")
        self.check_usage(body.get("usage"))
        self.assertEqual(len(body["choices"]), 1, body)
        return body["choices"][0]

    def test_more_choices_than_the_queue_holds_400(self):
        # --max-queue 1: two choices can never all wait, on an idle server too (this was a 503
        # "queue is full", which no retry could change).
        for body in ({"prompt": ["a", "b"], "max_tokens": 1}, {"prompt": "a", "n": 2,
                                                                "max_tokens": 1}):
            with self.subTest(body=body):
                err = self.assert_error(self.srv.post("/v1/completions", body), 400, "n",
                                        f"{body}")
                self.assertIn("--max-queue", err["message"], err)
        self.assertEqual(wait_idle(self.srv).value("duality_queue_depth"), 0)

    def test_queue_full_503(self):
        req = {"prompt": [510, 1263], "max_tokens": 4096, "temperature": 0, "ignore_eos": True,
               "stream": True}
        first = self.srv.open_stream("/v1/completions", req)
        self.addCleanup(first.close)
        self.assertEqual(first.result.status, 200, first.result)
        self.wait_for(lambda m: m.value("duality_running_sequences") == 1, "one running")
        # Opened in a thread: a server may send the headers only once the sequence runs.
        second: list = []
        opener = threading.Thread(target=lambda: second.append(
            self.srv.open_stream("/v1/completions", req, timeout=60)), daemon=True)
        opener.start()
        self.addCleanup(lambda: [s.close() for s in second])
        self.wait_for(lambda m: m.value("duality_queue_depth") == 1, "one waiting")
        r = self.srv.post("/v1/completions", {**req, "stream": False})
        self.assert_error(r, 503, what="a request beyond --max-queue")
        first.close()
        opener.join(60)
        for st in second:
            st.close()
        m = wait_idle(self.srv)
        self.assertEqual(m.value("duality_running_sequences") + m.value("duality_queue_depth"),
                         0, "the dropped streams still hold a slot or a queue place")
        self.assertEqual(self.srv.health(), 200)


class TestWorkers(OwnServerCase):
    """--http-threads 4: three workers for generations, one kept for /health and /metrics."""
    server_args = ["--http-threads", "4", "--max-seqs", "4", "--max-tokens-limit", "1000000",
                   "--request-timeout", "120"]

    def test_generation_beyond_the_workers_503_while_health_answers(self):
        # Three streams hold the three generation workers. Before the cap, a fourth stream took
        # the last worker and /health, /metrics and every later request waited for one to end.
        req = {"prompt": [510, 1263], "max_tokens": 1000000, "temperature": 0,
               "ignore_eos": True, "stream": True}
        streams = []
        self.addCleanup(lambda: [st.close() for st in streams])
        for _ in range(3):
            streams.append(self.srv.open_stream("/v1/completions", req, timeout=60))
            self.assertEqual(streams[-1].result.status, 200, streams[-1].result)
        deadline = time.monotonic() + 30
        while self.srv.metrics().value("duality_running_sequences") < 3:
            self.assertLess(time.monotonic(), deadline, "three streams not running in 30 s")
            time.sleep(0.05)
        for body in ({**req, "stream": False, "max_tokens": 1}, req):
            with self.subTest(stream=body["stream"]):
                err = self.assert_error(self.srv.post("/v1/completions", body, timeout=10), 503,
                                        what="a generation beyond the workers")
                self.assertIn("--http-threads", err["message"], err)
        # The 503 asks a kept-alive client to close (cpp-httplib itself keeps reading the socket
        # until it idles out, holding a kept worker; a client that honours the header frees it).
        r = self.srv.raw_request("POST", "/v1/completions",
                                 json.dumps({**req, "stream": False}).encode(),
                                 headers={"Connection": "keep-alive"}, timeout=10)
        self.assertEqual(r.status, 503, r)
        self.assertEqual(r.headers.get("connection"), "close", r.headers)
        self.assertEqual(self.srv.health(timeout=5), 200)
        for st in streams:
            st.close()
        m = wait_idle(self.srv)
        self.assertEqual(m.value("duality_running_sequences"), 0)
        # The workers are back: a generation runs again.
        r = self.srv.post("/v1/completions", {"prompt": [510], "max_tokens": 2}, timeout=60)
        self.assertEqual(r.status, 200, r)


class TestServedName(ServerTestCase):
    """Without --served-model-name the model is named after its folder's canonical path: a
    relative path ending in "/." (whose last component is ".") names the folder itself."""

    def test_name_from_the_canonical_folder(self):
        folder = os.path.relpath(model_dir()) + os.sep + "."
        srv = Server(duality(), ["--model", folder, "--device", CONFIG["device"],
                                 *CONFIG["serve_args"]])
        try:
            self.assertIn(f"(model {served_name()},", srv.listen_line)
            models = self.ok(srv.get("/v1/models"))
            self.assertEqual([m["id"] for m in models["data"]], [served_name()])
            body = self.complete({"prompt": [510], "max_tokens": 1}, srv)
            self.assertEqual(body["model"], served_name())
        finally:
            self.assertEqual(srv.stop(), 0)


class TestTemplateMaxOutput(ServerTestCase):
    """--template-max-output 200 on a copy of the model (files linked) with a Jinja template: a
    prompt the template renders longer than 200 bytes is a 400 naming the flag."""
    TEMPLATE = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
                "{% if add_generation_prompt %}<|assistant|>{% endif %}")

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="duality-template-")
        folder = os.path.join(cls.tmp.name, "templated")
        os.mkdir(folder)
        for name in os.listdir(model_dir()):
            os.symlink(os.path.join(os.path.abspath(model_dir()), name),
                       os.path.join(folder, name))
        with open(os.path.join(folder, "chat_template.jinja"), "w", encoding="utf-8") as f:
            f.write(cls.TEMPLATE)
        cls.srv = Server(duality(), ["--model", folder, "--device", CONFIG["device"],
                                     *CONFIG["serve_args"], "--template-max-output", "200"])

    @classmethod
    def tearDownClass(cls):
        try:
            code = cls.srv.stop(timeout=30)
            if code != 0:
                raise AssertionError(f"server exited {code} on SIGTERM")
        finally:
            cls.tmp.cleanup()

    def test_prompts_up_to_the_cap_render_longer_ones_are_400(self):
        short = {"messages": [{"role": "user", "content": "a" * 150}], "max_tokens": 1}
        body = self.chat(short)
        self.assertEqual(body["model"], "templated")
        err = self.assert_error(
            self.srv.post("/v1/chat/completions",
                          {"messages": [{"role": "user", "content": "a" * 250}], "max_tokens": 1}),
            400, "messages", "a prompt rendered past --template-max-output")
        self.assertIn("exceeds 200 bytes", err["message"], err)
        self.assertIn("--template-max-output", err["message"], err)
        self.assertEqual(self.srv.health(), 200)


# ---- 7. graceful shutdown ----------------------------------------------------------------

class TestShutdown(ServerTestCase):
    def _health_poller(self, srv, stop_evt, out):
        while not stop_evt.is_set():
            try:
                out.append(srv.get("/health", timeout=2).status)
            except OSError:
                out.append(0)  # refused / reset: not accepting any more
            time.sleep(0.05)

    def test_sigterm_lets_running_stream_finish(self):
        srv = start_server("--shutdown-grace", "20")
        try:
            s = srv.open_stream("/v1/completions", {
                "prompt": prompt_ids(20, 30), "max_tokens": 48, "temperature": 0,
                "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}})
            self.addCleanup(s.close)
            self.assertEqual(s.result.status, 200, s.result)
            it = s.events()
            next(it)
            polled: list[int] = []
            stop_evt = threading.Event()
            poller = threading.Thread(target=self._health_poller, args=(srv, stop_evt, polled))
            t_term = time.monotonic()
            srv.signal(signal.SIGTERM)
            poller.start()
            for _ in it:
                pass
            res = s.result
            s.close()
            code = srv.wait(20 + 10)
            stop_evt.set()
            poller.join(10)
            self.assertIsNotNone(code, "did not exit within --shutdown-grace + 10 s")
            print(f"\n  exit {code} {time.monotonic() - t_term:.1f} s after SIGTERM; /health "
                  f"during shutdown: {sorted(set(polled))}", file=sys.stderr)
            self.assertEqual(code, 0, srv.stderr[-2000:])
            self.assertIsNone(res.error, res)
            self.assertTrue(res.done, f"the running stream was cut: {res}")
            self.assertEqual(stream_finish_reasons(res.events), {0: "length"})
            self.assertEqual(res.events[-1]["usage"]["completion_tokens"], 48)
            self.assertTrue(set(polled) <= {0, 200, 503}, polled)
            if 503 in polled:
                self.assertNotIn(200, polled[polled.index(503):], "/health 200 after 503")
            else:
                print("  (/health 503 was not observed during shutdown)", file=sys.stderr)
        finally:
            srv.kill()

    def test_sigterm_grace_expires(self):
        srv = start_server("--shutdown-grace", "1")
        try:
            s = srv.open_stream("/v1/completions", {
                "prompt": [510, 1263], "max_tokens": 4096, "temperature": 0,
                "ignore_eos": True, "stream": True})
            self.addCleanup(s.close)
            self.assertEqual(s.result.status, 200, s.result)
            it = s.events()
            next(it)
            reader_done = threading.Event()

            def drain():
                for _ in it:
                    pass
                reader_done.set()

            reader = threading.Thread(target=drain, daemon=True)
            reader.start()
            t_term = time.monotonic()
            srv.signal(signal.SIGTERM)
            code = srv.wait(1 + 15)
            self.assertIsNotNone(code, "did not exit within --shutdown-grace + 15 s")
            self.assertEqual(code, 0, srv.stderr[-2000:])
            self.assertTrue(reader_done.wait(10), "the stream hung after the server exited")
            s.close()
            res = s.result
            fr = stream_finish_reasons(res.events)
            print(f"\n  grace expired: exit {code} after {time.monotonic() - t_term:.1f} s; "
                  f"stream done={res.done} finish={fr} error={res.error}", file=sys.stderr)
            self.assertLess(sum(len(t) for t in stream_texts(res.events).values()), 10**6)
        finally:
            srv.kill()

    def test_sigterm_idle_and_sigint(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            srv = start_server()
            try:
                self.assertEqual(srv.health(), 200)
                srv.signal(sig)
                code = srv.wait(15)
                self.assertEqual(code, 0, f"signal {sig}: exit {code}; {srv.stderr[-1000:]}")
            finally:
                srv.kill()


# ---- 8. bounded load test ----------------------------------------------------------------

class TestLoad(SharedServerCase):
    def test_load_48_requests_16_clients(self):
        rng = random.Random(48)
        reqs = []
        for i in range(48):
            length = rng.choice([4, 16, 64, 128, 256, 400, 512])
            body = {"max_tokens": rng.choice([8, 12, 16, 24]), "temperature": 0,
                    "ignore_eos": True, "stream": True,
                    "stream_options": {"include_usage": True}}
            if i % 4 == 3:
                body["messages"] = [{"role": "user", "content": CORPUS[i * 37:i * 37 + 4 *
                                                                       length]}]
                reqs.append(("/v1/chat/completions", body))
            else:
                body["prompt"] = prompt_ids(length, rng.randint(0, 900))
                reqs.append(("/v1/completions", body))

        def one(k):
            path, body = reqs[k]
            return self.srv.stream(path, body, timeout=120)

        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            results = list(pool.map(one, range(len(reqs))))
        wall = time.monotonic() - t0
        ttft, lat, out_tokens = [], [], 0
        for k, res in enumerate(results):
            path, body = reqs[k]
            with self.subTest(request=k):
                _, fr, usage = self.check_stream(res, chat="messages" in body,
                                                 include_usage=True)
                self.assertEqual(fr, {0: "length"})
                self.assertEqual(usage["completion_tokens"], body["max_tokens"])
                out_tokens += usage["completion_tokens"]
                if res.ttft is not None:
                    ttft.append(res.ttft)
                lat.append(res.t_end - res.t_sent)
        print(f"\n  load: {len(reqs)} requests, 16 clients, {wall:.2f} s: "
              f"{len(reqs) / wall:.2f} req/s, {out_tokens / wall:.1f} output tok/s; "
              f"TTFT p50 {percentile(ttft, 50) * 1e3:.0f} ms p99 {percentile(ttft, 99) * 1e3:.0f}"
              f" ms; latency p50 {percentile(lat, 50) * 1e3:.0f} ms p99 "
              f"{percentile(lat, 99) * 1e3:.0f} ms", file=sys.stderr)
        self.assertEqual(len(results), 48)
