"""What every server test module shares (tests/server/test_server_api.py runs them): the
configuration, the corpus of prompts, the shared servers, CLI helpers and the TestCase bases with
their shape checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from server_harness import Server, kill_all, stream_finish_reasons, stream_texts  # noqa: E402

CONFIG = {
    "duality": os.environ.get("DUALITY_BINARY", os.path.join(REPO, "build", "duality")),
    "model": os.environ.get("DUALITY_TEST_MODEL",
                            os.path.join(REPO, "models", "mamba2-gutenberg-17m")),
    "device": os.environ.get("DUALITY_TEST_DEVICE", "cpu"),
    "serve_args": [],
    "time_limit": float(os.environ.get("DUALITY_TEST_TIME_LIMIT", "900")),
}

# Original prose (no copyright concerns), tokenized once with `duality tokenize`; slices of it are
# the realistic token-id prompts of every test.
CORPUS = (
    "The lighthouse keeper had lived on the island for eleven years, and in all that time he "
    "had never once missed the lighting of the lamp. Every evening, a little before sunset, he "
    "climbed the hundred and twelve steps of the tower, wiped the great glass with a soft cloth, "
    "trimmed the wick, and waited for the moment when the sun touched the water. Then he struck "
    "the match. His wife said that he loved the lamp more than he loved her, and he did not "
    "argue, because he was not a man who argued, and because he was not entirely sure that she "
    "was wrong.\n\n"
    "In the spring of the twelfth year a boat came from the mainland with a letter. The letter "
    "said that the lighthouse would be fitted with an electric lamp, which would turn itself on "
    "at dusk and off at dawn, and that the keeper would be given a pension and a small house in "
    "the town. He read the letter three times, folded it carefully, and put it in the drawer of "
    "the kitchen table, under the spoons. He said nothing about it to his wife. That evening he "
    "climbed the steps as usual, but he climbed them slowly, counting each one aloud, as if he "
    "were afraid of forgetting the number.\n\n"
    "The town was larger than he remembered. There were motor cars in the square where the "
    "horses had once stood, and the baker's shop had become a bank, with brass handles on its "
    "doors and a clock above the window that was always four minutes fast. His wife liked the "
    "town. She joined a club that met on Thursdays to sew and to talk about the people who were "
    "not there, and she came home with her cheeks pink and her basket full of news. He walked. "
    "He walked to the harbour in the morning and back again at noon, and in the afternoon he "
    "walked along the cliff path to the place where he could see the island, a grey hump on the "
    "edge of the sea, and the tower standing on it like a finger raised for silence.\n\n"
    "On the first night of winter a storm came in from the west. The wind took the slates from "
    "the roof of the church and threw them into the street, the rain ran down the hill in a "
    "brown river, and the sea rose over the harbour wall and filled the fish market to the "
    "height of a man's knee. He stood at the window and watched the dark where the island was. "
    "At nine o'clock the light went out. He waited, his hand flat against the cold glass, for "
    "it to come back, and it did not come back. At half past nine he put on his coat and his "
    "boots and went down to the harbour, where a fisherman he knew was tying his boat to the "
    "wall with a second rope, and he asked him, in a quiet voice, whether he would take him out "
    "to the island. The fisherman looked at him for a long time. Then he untied the rope.\n\n"
    "They reached the island a little after midnight. The keeper climbed the hundred and twelve "
    "steps in the dark, counting them, and at the top he found the new lamp dead and cold, its "
    "wires black where the water had got in. The old lamp was still there, pushed into a corner "
    "under a sheet. He pulled away the sheet, filled the lamp with oil from the can he had "
    "carried on his back, trimmed the wick, and struck a match. The light went out across the "
    "water, and somewhere in the rain a ship that had been feeling its way towards the rocks "
    "turned slowly back towards the open sea."
)

_cache: dict[str, object] = {}
_shared: dict[str, Server] = {}
_shared_lock = threading.Lock()


# ---- configuration, CLI helpers ------------------------------------------------------------

def duality() -> str:
    return CONFIG["duality"]


def model_dir() -> str:
    return CONFIG["model"]


def served_name() -> str:
    return os.path.basename(os.path.normpath(model_dir()))


def serve_args(*extra: str) -> list[str]:
    return ["--model", model_dir(), "--device", CONFIG["device"], *CONFIG["serve_args"], *extra]


def start_server(*extra: str) -> Server:
    return Server(duality(), serve_args(*extra))


_shared_failed: dict[str, str] = {}


def shared_server(kind: str) -> Server:
    """'main' (default flags, cache on) or 'cold' (--cache-memory 0); started once per file. A
    server that failed to start or died is reported to every later user, never restarted."""
    with _shared_lock:
        if kind in _shared_failed:
            raise AssertionError(_shared_failed[kind])
        srv = _shared.get(kind)
        if srv is not None and not srv.alive():
            _shared_failed[kind] = (f"the shared {kind} server died (exit {srv.proc.returncode});"
                                    f" stderr tail:\n{srv.stderr[-2000:]}")
            raise AssertionError(_shared_failed[kind])
        if srv is None:
            try:
                srv = start_server(*(["--cache-memory", "0"] if kind == "cold" else []))
            except Exception as e:
                _shared_failed[kind] = f"the shared {kind} server did not start: {e}"
                raise
            _shared[kind] = srv
        return srv


def run_cli(*args: str, stdin: str | None = None, timeout: float = 180) -> str:
    p = subprocess.run([duality(), *args], input=stdin.encode() if stdin is not None else None,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    if p.returncode != 0:
        raise AssertionError(f"`duality {' '.join(args)[:300]}` failed ({p.returncode}): "
                             f"{p.stderr.decode(errors='replace')[-2000:]}")
    return p.stdout.decode("utf-8", "replace")


def tokenize(text: str) -> list[int]:
    key = "tok:" + text
    if key not in _cache:
        _cache[key] = json.loads(run_cli("tokenize", "--model", model_dir(), "--file", "-",
                                         "--json", stdin=text))
    return list(_cache[key])


def detokenize(ids: list[int]) -> str:
    return run_cli("tokenize", "--model", model_dir(), "--decode", json.dumps(ids))


def cli_greedy_ids(prompt_ids: list[int], n: int) -> list[int]:
    out = run_cli("generate", "--model", model_dir(), "--device", CONFIG["device"],
                  "--prompt-ids", ",".join(map(str, prompt_ids)), "--greedy", "--ids",
                  "-n", str(n), "--ignore-eos").strip()
    return [int(x) for x in out.split(",")] if out else []


def cli_greedy_text(prompt_ids: list[int], n: int) -> str:
    """The CLI's text for the continuation (it prints decode(prompt) first, then a newline)."""
    out = run_cli("generate", "--model", model_dir(), "--device", CONFIG["device"],
                  "--prompt-ids", ",".join(map(str, prompt_ids)), "--greedy",
                  "-n", str(n), "--ignore-eos")
    prefix = detokenize(prompt_ids)
    assert out.startswith(prefix) and out.endswith("\n"), (prefix, out)
    return out[len(prefix):-1]


def corpus_ids() -> list[int]:
    if "corpus" not in _cache:
        _cache["corpus"] = tokenize(CORPUS)
    return list(_cache["corpus"])


def prompt_ids(length: int, offset: int = 0) -> list[int]:
    ids = corpus_ids()
    while len(ids) < offset + length:
        ids = ids + ids
    return ids[offset:offset + length]


def vocab_sizes() -> tuple[int, int]:
    """(ids the tokenizer knows, config vocab_size incl. padded rows)."""
    if "vocab" not in _cache:
        with open(os.path.join(model_dir(), "tokenizer.json"), encoding="utf-8") as f:
            tok = json.load(f)
        n_tok = max([*tok["model"]["vocab"].values(),
                     *(a["id"] for a in tok.get("added_tokens", []))]) + 1
        with open(os.path.join(model_dir(), "config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
        _cache["vocab"] = (n_tok, int(cfg.get("vocab_size", n_tok)))
    return _cache["vocab"]  # type: ignore[return-value]


def has_chat_template() -> bool:
    """chat_template.jinja, or chat_template in tokenizer_config.json (docs/server.md)."""
    if os.path.exists(os.path.join(model_dir(), "chat_template.jinja")):
        return True
    path = os.path.join(model_dir(), "tokenizer_config.json")
    if not os.path.exists(path):
        return False
    with open(path, encoding="utf-8") as f:
        return bool(json.load(f).get("chat_template"))


def plain_chat_prompt(messages: list[dict]) -> str:
    out = ""
    for m in messages:
        role = m["role"]
        out += f"{role[:1].upper()}{role[1:]}: {m['content']}\n\n"
    return out + "Assistant:"


def settled_metrics(srv: Server, timeout: float = 5.0):
    """/metrics once the HTTP request counters (other than /metrics' own) stop moving: a request
    may be counted just after its response reached the client."""
    def answered(m):
        return sum(v for n, ls, v in m.series
                   if n == "duality_http_requests_total" and ls.get("path") != "/metrics")
    m = srv.metrics()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        m2 = srv.metrics()
        if answered(m2) == answered(m):
            return m2
        m = m2
    return m


def wait_idle(srv: Server, timeout: float = 15.0):
    """/metrics once no sequence runs or waits (bounded); the caller asserts on the result."""
    deadline = time.monotonic() + timeout
    while True:
        m = srv.metrics()
        busy = (m.value("duality_running_sequences") + m.value("duality_queue_depth")
                + m.value("duality_slots_in_use"))
        if busy == 0 or time.monotonic() > deadline:
            return m
        time.sleep(0.1)


def is_int(x) -> bool:
    return type(x) is int  # noqa: E721 (bool is not an int here)


def is_num(x) -> bool:
    return type(x) in (int, float)


# ---- shape checks --------------------------------------------------------------------------

class ServerTestCase(unittest.TestCase):
    maxDiff = 6000
    srv: Server

    def ok(self, r, what: str = ""):
        self.assertEqual(r.status, 200, f"{what}: {r!r}")
        self.assertIn("application/json", r.content_type, f"{what}: content-type")
        return r.json()

    def complete(self, body: dict, srv: Server | None = None, path: str = "/v1/completions"):
        srv = srv or self.srv
        return self.ok(srv.post(path, body), f"POST {path} {json.dumps(body)[:300]}")

    def chat(self, body: dict, srv: Server | None = None):
        return self.complete(body, srv, "/v1/chat/completions")

    def check_usage(self, u, what=""):
        self.assertIsInstance(u, dict, what)
        for k in ("prompt_tokens", "completion_tokens", "total_tokens"):
            self.assertTrue(is_int(u.get(k)) and u[k] >= 0, f"{what} usage.{k}: {u}")
        self.assertEqual(u["total_tokens"], u["prompt_tokens"] + u["completion_tokens"],
                         f"{what} usage sums: {u}")
        d = u.get("prompt_tokens_details")
        self.assertIsInstance(d, dict, f"{what} usage.prompt_tokens_details: {u}")
        self.assertTrue(is_int(d.get("cached_tokens")), f"{what} cached_tokens: {u}")
        self.assertTrue(0 <= d["cached_tokens"] <= u["prompt_tokens"], f"{what}: {u}")

    def check_common(self, body, prefix, obj, model=None):
        self.assertIsInstance(body, dict)
        self.assertIsInstance(body.get("id"), str, body)
        self.assertTrue(body["id"].startswith(prefix) and len(body["id"]) > len(prefix),
                        f"id {body['id']!r} lacks prefix {prefix!r}")
        self.assertEqual(body.get("object"), obj, body)
        self.assertTrue(is_int(body.get("created")), body)
        self.assertLess(abs(body["created"] - time.time()), 86400, "created is a Unix time")
        self.assertEqual(body.get("model"), model or served_name(), body)

    def check_choices(self, body, prefix: str, obj: str, n=None, model=None) -> list:
        """The fields every completion and chat response has; its choices, numbered 0.. (n of
        them when n is given), each with a finish reason."""
        self.check_common(body, prefix, obj, model)
        ch = body.get("choices")
        self.assertIsInstance(ch, list, body)
        if n is not None:
            self.assertEqual(len(ch), n, body)
        self.assertEqual([c.get("index") for c in ch], list(range(len(ch))), body)
        for c in ch:
            self.assertIn(c.get("finish_reason"), ("stop", "length"), c)
        return ch

    def check_completion(self, body, n=None, model=None):
        ch = self.check_choices(body, "cmpl-", "text_completion", n, model)
        for c in ch:
            self.assertIsInstance(c.get("text"), str, c)
            self.assertIn("logprobs", c, c)
            self.assertIsNone(c["logprobs"], c)
        self.check_usage(body.get("usage"), "completion")
        return ch

    def check_chat(self, body, n=None, model=None):
        ch = self.check_choices(body, "chatcmpl-", "chat.completion", n, model)
        for c in ch:
            m = c.get("message")
            self.assertIsInstance(m, dict, c)
            self.assertEqual(m.get("role"), "assistant", c)
            self.assertIsInstance(m.get("content"), str, c)
        self.check_usage(body.get("usage"), "chat")
        return ch

    def check_stream(self, res, chat: bool, n: int = 1, include_usage: bool = False,
                     model=None):
        """Shape of a whole SSE response; returns (texts by index, finish reasons, usage)."""
        self.assertEqual(res.status, 200, res)
        self.assertIn("text/event-stream", res.headers.get("content-type", ""), res.headers)
        self.assertIsNone(res.error, res)
        self.assertTrue(res.done, f"stream did not end with data: [DONE]: {res}")
        self.assertEqual(res.extra_after_done.strip(), b"", "bytes after [DONE]")
        self.assertTrue(res.events, "no events")
        prefix, obj = ("chatcmpl-", "chat.completion.chunk") if chat else ("cmpl-",
                                                                            "text_completion")
        ids = {ev.get("id") for ev in res.events}
        self.assertEqual(len(ids), 1, f"chunk ids differ: {ids}")
        usage = None
        seen_first_delta: set[int] = set()
        finished: set[int] = set()
        for k, ev in enumerate(res.events):
            self.check_common(ev, prefix, obj, model)
            self.assertIsInstance(ev.get("choices"), list, ev)
            if ev["choices"] == [] and ev.get("usage") is not None:
                self.assertTrue(include_usage, f"usage chunk without include_usage: {ev}")
                self.assertEqual(k, len(res.events) - 1, "the usage chunk must be the last")
                self.check_usage(ev["usage"], "stream usage")
                usage = ev["usage"]
                continue
            self.assertTrue(ev["choices"], f"chunk with no choices and no usage: {ev}")
            if not include_usage:
                self.assertIsNone(ev.get("usage"), ev)
            for c in ev["choices"]:
                i = c.get("index")
                self.assertTrue(is_int(i) and 0 <= i < n, c)
                self.assertNotIn(i, finished, f"chunk for index {i} after its finish_reason")
                self.assertIn("finish_reason", c, c)
                if chat:
                    d = c.get("delta")
                    self.assertIsInstance(d, dict, c)
                    if i not in seen_first_delta:
                        self.assertEqual(d, {"role": "assistant", "content": ""},
                                         f"first delta of choice {i}")
                        seen_first_delta.add(i)
                    elif "content" in d:
                        self.assertIsInstance(d["content"], str, c)
                else:
                    self.assertIsInstance(c.get("text"), str, c)
                    self.assertIn("logprobs", c, c)
                    self.assertIsNone(c["logprobs"], c)
                if c["finish_reason"] is not None:
                    self.assertIn(c["finish_reason"], ("stop", "length"), c)
                    finished.add(i)
        self.assertEqual(finished, set(range(n)), "every choice needs a finish_reason")
        if include_usage:
            self.assertIsNotNone(usage, "include_usage: no usage chunk")
        texts = stream_texts(res.events)
        return ([texts.get(i, "") for i in range(n)], stream_finish_reasons(res.events), usage)

    def assert_error(self, r, status: int, field: str | None = None, what: str = "",
                     code: str | None = None):
        what = what or "request"
        self.assertEqual(r.status, status, f"{what}: expected {status}, got {r!r}")
        try:
            body = json.loads(r.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            self.fail(f"{what}: error body is not JSON: {r!r}")
        self.assertIsInstance(body, dict, f"{what}: {r!r}")
        err = body.get("error")
        self.assertIsInstance(err, dict, f"{what}: no error object: {r!r}")
        self.assertIsInstance(err.get("message"), str, f"{what}: {r!r}")
        self.assertTrue(err["message"], f"{what}: empty message")
        self.assertIsInstance(err.get("type"), str, f"{what}: {r!r}")
        self.assertIn("param", err, f"{what}: {r!r}")
        self.assertIn("code", err, f"{what}: {r!r}")
        if field is not None:
            self.assertTrue(field in str(err["param"]) or field in err["message"],
                            f"{what}: the error names neither param nor message {field!r}: "
                            f"{err}")
        if code is not None:
            self.assertEqual(err["code"], code, f"{what}: {err}")
        return err


class SharedServerCase(ServerTestCase):
    kind = "main"

    @classmethod
    def setUpClass(cls):
        cls.srv = shared_server(cls.kind)


class OwnServerCase(ServerTestCase):
    """Starts its own server with `server_args`; checks it exits 0 on SIGTERM."""
    server_args: list[str] = []

    @classmethod
    def setUpClass(cls):
        cls.srv = start_server(*cls.server_args)

    @classmethod
    def tearDownClass(cls):
        code = cls.srv.stop(timeout=30)
        if code != 0:
            raise AssertionError(f"{cls.__name__}: server exited {code} on SIGTERM; stderr tail:"
                                 f"\n{cls.srv.stderr[-2000:]}")


# ---- end of the run ----------------------------------------------------------------------

def stop_shared_servers() -> None:
    """Stops the shared servers (at the end of the run); raises with what went wrong."""
    errors = []
    with _shared_lock:
        servers = list(_shared.items())
        _shared.clear()
    errors += list(_shared_failed.values())
    for name, srv in servers:
        try:
            if not srv.alive():
                if name not in _shared_failed:
                    errors.append(f"the {name} server died (exit {srv.proc.returncode}): "
                                  f"{srv.stderr[-1500:]}")
                srv.kill()
                continue
            code = srv.stop(timeout=30)
            if code != 0:
                errors.append(f"the {name} server exited {code}: {srv.stderr[-1500:]}")
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        raise AssertionError("\n".join(errors))


def start_watchdog(limit: float) -> None:
    def fire():
        sys.stderr.write(f"\ntest_server_api: time limit of {limit:.0f} s exceeded; killing "
                         f"every server\n")
        sys.stderr.flush()
        kill_all()
        os._exit(3)

    t = threading.Timer(limit, fire)
    t.daemon = True
    t.start()
