"""Black-box harness for `duality serve` (standard library only).

    from server_harness import Server
    with Server("build/duality", ["--model", "models/mamba2-gutenberg-17m"]) as srv:
        r = srv.post("/v1/completions", {"prompt": "Hi", "max_tokens": 4})
        assert r.status == 200, r.text
        s = srv.stream("/v1/completions", {"prompt": "Hi", "max_tokens": 4, "stream": True})
        assert s.done
        m = srv.metrics()                      # {'name{label="v"}': value, ...}
        code = srv.stop()                      # SIGTERM; the exit code

`Server` starts `duality serve --port 0 ARGS...`, reads stderr until the line
`duality serve: listening on http://HOST:PORT ...` (ServerStartError with the captured
stderr after `startup_timeout` seconds or if the process exits first), and keeps draining
stdout/stderr in background threads so that a chatty server never blocks on a full pipe.
Every request opens its own connection (so helpers are safe to call from many threads) and
has a timeout. Every server that was started is killed at interpreter exit (atexit), and
`kill_all()` does the same on demand (e.g. from a watchdog).
"""

from __future__ import annotations

import atexit
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from typing import Any, Iterator

DEFAULT_REQUEST_TIMEOUT = 60.0
LISTEN_RE = re.compile(r"duality serve: listening on http://(\[[^\]]+\]|[^:/\s]+):(\d+)")

_live: set["Server"] = set()
_live_lock = threading.Lock()


class ServerStartError(RuntimeError):
    pass


class ServerHang(AssertionError):
    """The server did not exit within the timeout after SIGTERM (it was killed)."""


class Response:
    def __init__(self, status: int, reason: str, headers: dict[str, str], body: bytes):
        self.status = status
        self.reason = reason
        self.headers = headers  # lower-cased names
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))

    def json_or_none(self) -> Any:
        try:
            return self.json()
        except (ValueError, UnicodeDecodeError):
            return None

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    def __repr__(self) -> str:
        body = self.text
        if len(body) > 600:
            body = body[:600] + "..."
        return f"<Response {self.status} {body!r}>"


class StreamResult:
    """A finished (or abandoned) SSE response.

    events: the parsed JSON of every `data:` event before `[DONE]` (in order);
    raw_events: their raw strings; done: `data: [DONE]` was seen; times: the monotonic arrival
    time of each event (relative to t_sent); status/headers; body: the whole body when the
    status is not 200; error: an exception text if reading failed (connection reset, bad JSON,
    timeout).
    """

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.events: list[Any] = []
        self.raw_events: list[str] = []
        self.times: list[float] = []
        self.done = False
        self.body = b""
        self.error: str | None = None
        self.t_sent = 0.0
        self.t_end = 0.0
        self.extra_after_done = b""

    @property
    def ttft(self) -> float | None:
        """Seconds from sending to the first event that carries text (or any event)."""
        for ev, t in zip(self.events, self.times):
            if _chunk_text(ev):
                return t
        return self.times[0] if self.times else None

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self) -> str:
        return (f"<StreamResult status={self.status} events={len(self.events)} done={self.done} "
                f"error={self.error!r} body={self.body[:300]!r}>")


def _chunk_text(ev: Any) -> str:
    if not isinstance(ev, dict):
        return ""
    out = []
    for c in ev.get("choices") or []:
        if not isinstance(c, dict):
            continue
        if isinstance(c.get("text"), str):
            out.append(c["text"])
        d = c.get("delta")
        if isinstance(d, dict) and isinstance(d.get("content"), str):
            out.append(d["content"])
    return "".join(out)


def stream_texts(events: list[Any]) -> dict[int, str]:
    """Concatenated text (completions) or delta content (chat) per choice index."""
    texts: dict[int, str] = {}
    for ev in events:
        for c in ev.get("choices") or []:
            i = c["index"]
            piece = c.get("text")
            if piece is None and isinstance(c.get("delta"), dict):
                piece = c["delta"].get("content")
            texts[i] = texts.get(i, "") + (piece or "")
    return texts


def stream_finish_reasons(events: list[Any]) -> dict[int, str]:
    out: dict[int, str] = {}
    for ev in events:
        for c in ev.get("choices") or []:
            if c.get("finish_reason") is not None:
                out[c["index"]] = c["finish_reason"]
    return out


def percentile(xs: list[float], p: float) -> float:
    """The p-th percentile of xs (0-100), interpolated between the nearest ranks; NaN for none
    (the load test's and scripts/bench_serve.py's latency figures)."""
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def stream_token_ids(events: list[Any]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for ev in events:
        for c in ev.get("choices") or []:
            if isinstance(c.get("token_ids"), list):
                out.setdefault(c["index"], []).extend(c["token_ids"])
    return out


class Metrics(dict):
    """Prometheus text parsed into {'name{a="x",b="y"}': value} (labels sorted by name).

    value(name, **labels) sums every series of `name` whose labels include the given ones
    (0.0 when none does); types maps a metric family to its `# TYPE`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.types: dict[str, str] = {}
        self.series: list[tuple[str, dict[str, str], float]] = []

    def value(self, name: str, **labels: str) -> float:
        total = 0.0
        for n, ls, v in self.series:
            if n == name and all(ls.get(k) == str(want) for k, want in labels.items()):
                total += v
        return total

    def has(self, name: str) -> bool:
        return any(n == name for n, _, _ in self.series)


_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?$")
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def parse_prometheus(text: str) -> Metrics:
    m = Metrics()
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split()
            if len(parts) >= 4 and parts[1] == "TYPE":
                m.types[parts[2]] = parts[3]
            continue
        g = _SAMPLE_RE.match(line)
        if not g:
            raise ValueError(f"bad Prometheus line: {line!r}")
        name, labels_text, value_text = g.group(1), g.group(3) or "", g.group(4)
        labels: dict[str, str] = {}
        pos = 0
        while pos < len(labels_text):
            lg = _LABEL_RE.match(labels_text, pos)
            if not lg or lg.end() == pos:
                raise ValueError(f"bad labels in Prometheus line: {line!r}")
            labels[lg.group(1)] = (lg.group(2).replace('\\"', '"').replace("\\n", "\n")
                                   .replace("\\\\", "\\"))
            pos = lg.end()
        value = float(value_text)  # handles NaN, +Inf, -Inf
        key = name + ("{" + ",".join(f'{k}="{labels[k]}"' for k in sorted(labels)) + "}"
                      if labels else "")
        m[key] = value
        m.series.append((name, labels, value))
    return m


class Server:
    """One `duality serve` subprocess on a free port."""

    def __init__(self, duality: str, args: list[str] | tuple[str, ...] = (), *,
                 startup_timeout: float = 120.0, request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
                 env: dict[str, str] | None = None, start: bool = True):
        self.duality = duality
        self.args = list(args)
        self.startup_timeout = startup_timeout
        self.request_timeout = request_timeout
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self.listen_line = ""
        self._stderr: list[str] = []
        self._stdout: list[str] = []
        self._lock = threading.Lock()
        self._listening = threading.Event()
        self._threads: list[threading.Thread] = []
        if start:
            self.start()

    # ---- process ---------------------------------------------------------------------------
    def start(self) -> "Server":
        cmd = [self.duality, "serve", "--port", "0", *self.args]
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env)
        with _live_lock:
            _live.add(self)
        for stream, sink, watch in ((self.proc.stderr, self._stderr, True),
                                    (self.proc.stdout, self._stdout, False)):
            t = threading.Thread(target=self._drain, args=(stream, sink, watch), daemon=True)
            t.start()
            self._threads.append(t)
        deadline = time.monotonic() + self.startup_timeout
        while not self._listening.wait(0.05):
            if self.proc.poll() is not None:
                time.sleep(0.2)  # let the drain threads catch the last lines
                raise ServerStartError(
                    f"`{' '.join(cmd)}` exited with {self.proc.returncode} before listening; "
                    f"stderr:\n{self.stderr}")
            if time.monotonic() > deadline:
                self.kill()
                raise ServerStartError(
                    f"`{' '.join(cmd)}` printed no 'listening' line in "
                    f"{self.startup_timeout:.0f} s; stderr:\n{self.stderr}")
        return self

    def _drain(self, stream, sink: list[str], watch: bool) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._lock:
                sink.append(line)
            if watch and not self._listening.is_set():
                g = LISTEN_RE.search(line)
                if g:
                    host = g.group(1)
                    self.host = host[1:-1] if host.startswith("[") else host
                    self.port = int(g.group(2))
                    self.listen_line = line
                    self._listening.set()
        stream.close()

    @property
    def stderr(self) -> str:
        with self._lock:
            return "\n".join(self._stderr)

    @property
    def stdout(self) -> str:
        with self._lock:
            return "\n".join(self._stdout)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int = signal.SIGTERM) -> None:
        if self.alive():
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if still running after `timeout` seconds."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then the exit code. A server still running after `timeout` seconds is killed
        and ServerHang is raised (a hang on shutdown is a failure)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.wait(timeout)
        if code is None:
            self.kill()
            raise ServerHang(f"duality serve did not exit {timeout:.0f} s after SIGTERM; "
                             f"killed. stderr tail:\n{self.stderr[-3000:]}")
        self._forget()
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._forget()

    def _forget(self) -> None:
        for t in self._threads:
            t.join(timeout=2)
        with _live_lock:
            _live.discard(self)

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        if self.alive():
            try:
                self.stop()
            except ServerHang:
                if exc[0] is None:
                    raise
        else:
            self._forget()

    # ---- HTTP ------------------------------------------------------------------------------
    def connection(self, timeout: float | None = None) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port,
                                          timeout=timeout or self.request_timeout)

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None, timeout: float | None = None) -> Response:
        data, hdrs = _encode_body(body, headers)
        conn = self.connection(timeout)
        try:
            conn.request(method, path, body=data, headers=hdrs)
            r = conn.getresponse()
            payload = r.read()
            return Response(r.status, r.reason, {k.lower(): v for k, v in r.getheaders()},
                            payload)
        finally:
            conn.close()

    def post(self, path: str, body: Any = None, headers: dict[str, str] | None = None,
             timeout: float | None = None) -> Response:
        """body: a dict/list (sent as JSON), bytes or str (sent as they are)."""
        return self.request("POST", path, body, headers, timeout)

    def get(self, path: str, timeout: float | None = None) -> Response:
        return self.request("GET", path, None, None, timeout)

    def health(self, timeout: float = 10.0) -> int:
        return self.get("/health", timeout=timeout).status

    def metrics(self) -> Metrics:
        r = self.get("/metrics")
        if r.status != 200:
            raise AssertionError(f"/metrics answered {r!r}")
        return parse_prometheus(r.text)

    def raw_exchange(self, data: bytes, timeout: float = 30.0, half_close: bool = False) -> bytes:
        """Sends raw bytes on a fresh socket (ignoring a peer that closes early), optionally
        half-closes, and returns everything received until the peer closes or `timeout`
        passes."""
        got = bytearray()
        with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
            try:
                sock.sendall(data)
                if half_close:
                    sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    chunk = sock.recv(65536)
                except socket.timeout:
                    break
                except OSError:
                    break
                if not chunk:
                    break
                got += chunk
        return bytes(got)

    def raw_request(self, method: str, path: str, body: bytes, *,
                    headers: dict[str, str] | None = None, timeout: float = 30.0) -> Response:
        """One HTTP/1.1 request written by hand (Connection: close), tolerant of a server that
        answers before reading the whole body (e.g. 413). Status 0 if nothing came back."""
        hdrs = {"Host": f"{self.host}:{self.port}", "Content-Type": "application/json",
                "Content-Length": str(len(body)), "Connection": "close"}
        hdrs.update(headers or {})
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
        raw = self.raw_exchange(head.encode("latin-1") + b"\r\n" + body, timeout)
        return parse_raw_response(raw)

    def open_stream(self, path: str, body: Any, headers: dict[str, str] | None = None,
                    timeout: float | None = None) -> "SSEStream":
        return SSEStream(self, path, body, headers, timeout)

    def stream(self, path: str, body: Any, headers: dict[str, str] | None = None,
               timeout: float | None = None, max_events: int = 100000) -> StreamResult:
        """POSTs body and reads the whole SSE response (up to `max_events` events)."""
        with self.open_stream(path, body, headers, timeout) as s:
            for _ in s.events():
                if len(s.result.events) >= max_events:
                    break
            return s.result


class SSEStream:
    """An SSE response read event by event; close() drops the connection (a client that goes
    away mid-stream)."""

    def __init__(self, server: Server, path: str, body: Any, headers: dict[str, str] | None,
                 timeout: float | None):
        data, hdrs = _encode_body(body, headers)
        hdrs.setdefault("Accept", "text/event-stream")
        self.result = StreamResult()
        self.conn = server.connection(timeout)
        self.result.t_sent = time.monotonic()
        self.resp = None
        try:
            self.conn.request("POST", path, body=data, headers=hdrs)
            self.resp = self.conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            self.result.error = f"{type(e).__name__}: {e}"
            self.result.t_end = time.monotonic()
            return
        self.result.status = self.resp.status
        self.result.headers = {k.lower(): v for k, v in self.resp.getheaders()}
        if self.resp.status != 200:
            try:
                self.result.body = self.resp.read()
            except (OSError, http.client.HTTPException) as e:
                self.result.error = f"{type(e).__name__}: {e}"
            self.result.t_end = time.monotonic()

    def events(self) -> Iterator[Any]:
        """Yields each parsed `data:` event until `data: [DONE]` or the end of the body."""
        res = self.result
        if self.resp is None or res.status != 200:
            return
        data_lines: list[str] = []
        try:
            while True:
                raw = self.resp.readline()
                if not raw:
                    break  # connection closed
                line = raw.decode("utf-8").rstrip("\r\n")
                if line == "":
                    if not data_lines:
                        continue
                    payload = "\n".join(data_lines)
                    data_lines = []
                    if payload == "[DONE]":
                        res.done = True
                        break
                    res.raw_events.append(payload)
                    res.events.append(json.loads(payload))
                    res.times.append(time.monotonic() - res.t_sent)
                    yield res.events[-1]
                elif line.startswith(":"):
                    continue  # comment / keep-alive
                elif line.startswith("data:"):
                    v = line[5:]
                    data_lines.append(v[1:] if v.startswith(" ") else v)
                else:
                    pass  # event:, id:, retry: fields carry nothing we use
            if res.done:
                # Nothing but whitespace may follow [DONE].
                rest = self.resp.read()
                res.extra_after_done = rest
        except (OSError, http.client.HTTPException, ValueError, UnicodeDecodeError) as e:
            res.error = f"{type(e).__name__}: {e}"
        finally:
            res.t_end = time.monotonic()

    def close(self) -> None:
        """Drops the connection at once (shutdown + close of the socket)."""
        try:
            sock = self.conn.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.conn.close()
        except OSError:
            pass

    def __enter__(self) -> "SSEStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _encode_body(body: Any, headers: dict[str, str] | None) -> tuple[bytes | None,
                                                                    dict[str, str]]:
    hdrs = dict(headers or {})
    if body is None:
        return None, hdrs
    if isinstance(body, (bytes, bytearray)):
        data = bytes(body)
    elif isinstance(body, str):
        data = body.encode("utf-8")
    else:
        data = json.dumps(body).encode("utf-8")
    if not any(k.lower() == "content-type" for k in hdrs):
        hdrs["Content-Type"] = "application/json"
    return data, hdrs


def parse_raw_response(raw: bytes) -> Response:
    """Parses one raw HTTP/1.x response (Content-Length or chunked body)."""
    if not raw:
        return Response(0, "no response", {}, b"")
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    try:
        status = int(parts[1])
    except (IndexError, ValueError):
        return Response(0, f"bad status line {lines[0]!r}", {}, raw)
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    body = rest
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out = bytearray()
        pos = 0
        while True:
            eol = rest.find(b"\r\n", pos)
            if eol < 0:
                break
            size = int(rest[pos:eol].split(b";")[0] or b"0", 16)
            if size == 0:
                break
            out += rest[eol + 2:eol + 2 + size]
            pos = eol + 2 + size + 2
        body = bytes(out)
    elif "content-length" in headers:
        body = rest[:int(headers["content-length"])]
    return Response(status, " ".join(parts[2:]), headers, body)


def kill_all() -> None:
    """Kills every server this process started and has not stopped yet."""
    with _live_lock:
        servers = list(_live)
    for s in servers:
        try:
            s.kill()
        except Exception:  # noqa: BLE001 (best effort at exit)
            pass


atexit.register(kill_all)
