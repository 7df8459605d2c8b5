"""A real vault for the tests: a redis-server and the vault-api binary on free loopback ports
(built by `cargo build --workspace --bins`; TV_BIN_DIR overrides target/debug), an admin client
token minted with vaultctl, plus a small target API that enforces its tokens and a forward proxy
that records what passes through it."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Set

import pytest

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(os.environ.get("TV_BIN_DIR", ROOT / "target" / "debug"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# How long a test waits for something it expects before it fails: far, because a busy machine
# is slow, not wrong, and waiting costs nothing when the thing comes early.
PATIENCE_S = 120


def wait_until(deadline_s: float, check: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {deadline_s}s waiting for {what}")


def listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds the socket listening on 127.0.0.1:``port``: tells a server
    just started from a stranger that took the port it was given."""
    local = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as table:
        inodes = {f"socket:[{f[9]}]" for f in (line.split() for line in list(table)[1:])
                  if len(f) > 9 and f[1] == local and f[3] == "0A"}
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                return True
        except OSError:
            pass
    return False


def port_answers(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def start_serving(spawn: Callable[[int], "Process"], serving: Callable[[int], bool],
                  what: str, port: Optional[int] = None) -> "Process":
    """Start a server on ``port``, or on a free one. A port found free may be taken before the
    server binds it (by another test, or an outgoing connection): the server then exits, and
    it starts again on another port. It serves once it holds the port (not a stranger) and
    ``serving`` says so. The process's ``port`` is where it serves."""
    failures = []
    for _ in range(3 if port is None else 1):
        p = port or free_port()
        proc = spawn(p)
        try:
            wait_until(PATIENCE_S, lambda: proc.proc.poll() is not None
                       or (listens(proc.proc.pid, p) and serving(p)), f"{what} on port {p}")
        except AssertionError:
            pass
        if proc.proc.poll() is None and listens(proc.proc.pid, p):
            proc.port = p
            return proc
        proc.stop()
        failures.append(f"port {p}: {proc.output()[-2000:]}")
    raise AssertionError(f"{what} did not start:\n" + "\n---\n".join(failures))


class Process:
    def __init__(self, args: List[str], env: Optional[Dict[str, str]] = None) -> None:
        self.port = 0
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class VaultUnderTest:
    """One Redis, one vault-api replica, and a way to mint client tokens."""

    def __init__(self) -> None:
        for name in ("vault-api", "vaultctl"):
            if not (BIN / name).is_file():
                raise RuntimeError(f"{BIN / name} is missing: run cargo build --workspace --bins")
        self.dir = Path(tempfile.mkdtemp(prefix="tv-py-"))
        self.redis = start_serving(
            lambda port: Process([shutil.which("redis-server") or "redis-server", "--port",
                                  str(port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no", "--dir", str(self.dir)]),
            lambda port: port_answers(port), "redis-server")
        self.redis_port = self.redis.port
        keys = self.dir / "keys"
        keys.mkdir()
        subprocess.run([str(BIN / "vaultctl"), "keys", "generate", "--out", str(keys / "k1.pem")],
                       check=True, capture_output=True)
        self.keys = keys
        self.env = {
            "TV_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}",
            "TV_PREFIX": "tv",
            "TV_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
            "TV_SIGNING_KEYS": str(keys),
            "RUST_LOG": "warn",
        }
        # The first replica serves gRPC too (tests/test_grpc.py).
        self.grpc = f"127.0.0.1:{free_port()}"
        self.api = self.replica(grpc=self.grpc)
        self.port = self.api.port
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin = self.mint("py-admin", "admin,lease,deposit,audit")

    def replica(self, port: Optional[int] = None, grpc: Optional[str] = None) -> Process:
        """Another vault-api process on the same Redis and keys, listening on ``port`` or on
        a free port (its ``port``), answering /readyz; with gRPC on ``grpc`` when given."""
        extra = {"TV_GRPC_LISTEN_ADDR": grpc} if grpc else {}
        return start_serving(
            lambda p: Process([str(BIN / "vault-api")],
                              {**self.env, **extra, "TV_LISTEN_ADDR": f"127.0.0.1:{p}"}),
            lambda p: self.ready(f"http://127.0.0.1:{p}"),
            "vault-api", port)

    def ready(self, url: Optional[str] = None) -> bool:
        try:
            with urllib.request.urlopen(f"{url or self.url}/readyz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def mint(self, sub: str, scopes: str) -> str:
        out = subprocess.run([str(BIN / "vaultctl"), "token", "mint", "--signing-key",
                              str(self.keys / "k1.pem"), "--sub", sub, "--scopes", scopes,
                              "--ttl", "1h"], check=True, capture_output=True, text=True)
        return out.stdout.strip().splitlines()[-1].strip()

    def stop(self) -> None:
        self.api.stop()
        self.redis.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def vault_server() -> Iterator[VaultUnderTest]:
    v = VaultUnderTest()
    yield v
    v.stop()


@pytest.fixture
def pool(vault_server: VaultUnderTest) -> str:
    """A fresh pool name per test (its config and tokens are the test's to make)."""
    return f"py-{uuid.uuid4().hex[:10]}"


def serve(handler: type) -> "tuple[ThreadingHTTPServer, str]":
    """Serve `handler` on a free loopback port in a thread; returns the server and its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


class Served:
    """A test server started with `serve`; `stop` shuts it down."""

    server: ThreadingHTTPServer

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def running(s: "Served") -> "Iterator[Served]":
    """Fixture body: yield the started server, stop it after the test."""
    yield s
    s.stop()


class QuietHandler(BaseHTTPRequestHandler):
    """A test server's request handler that keeps the test output clean."""

    def log_message(self, *a: object) -> None:
        pass

    def bearer(self) -> str:
        """The request's bearer token ("" without one)."""
        auth = self.headers.get("Authorization", "")
        return auth[len("Bearer "):] if auth.startswith("Bearer ") else ""


class Target(Served):
    """A small third-party API that enforces the vault's tokens the way real ones do: an unknown
    or revoked token gets 401, a token past its quota gets 429 with Retry-After, and every
    answer carries X-RateLimit-Remaining / X-RateLimit-Reset."""

    def __init__(self, quota: int = 1000, delay_s: float = 0.0) -> None:
        self.quota = quota
        self.delay_s = delay_s
        self.valid: Set[str] = set()
        self.revoked: Set[str] = set()
        self.used: Dict[str, int] = {}
        #: (time, token, status) of every request.
        self.seen: List[tuple] = []
        self.lock = threading.Lock()
        target = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                if target.delay_s:
                    time.sleep(target.delay_s)
                token = self.bearer()
                with target.lock:
                    if token not in target.valid or token in target.revoked:
                        status, extra = 401, {}
                    elif target.used.get(token, 0) >= target.quota:
                        status, extra = 429, {"Retry-After": "7"}
                    else:
                        target.used[token] = target.used.get(token, 0) + 1
                        status, extra = 200, {}
                    left = max(0, target.quota - target.used.get(token, 0))
                    target.seen.append((time.time(), token, status, self.path))
                body = json.dumps({"path": self.path, "status": status}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-RateLimit-Remaining", str(left))
                self.send_header("X-RateLimit-Reset", str(int(time.time()) + 3600))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

        self.server, self.url = serve(Handler)


@pytest.fixture
def target() -> Iterator[Served]:
    yield from running(Target())


class LlmTarget(Served):
    """An LLM-style API that limits each key per minute on requests and on tokens (each call
    costs ``cost`` tokens), the way OpenAI-style providers do: a call past either limit gets
    429; every answer carries ``x-ratelimit-remaining-requests`` / ``-tokens`` and their resets
    as durations (``59s``). Its windows start at a key's first call."""

    def __init__(self, rpm: int, tpm: int, cost: int) -> None:
        self.rpm, self.tpm, self.cost = rpm, tpm, cost
        self.valid: Set[str] = set()
        #: key -> [window start, requests, tokens]
        self.windows: Dict[str, List[float]] = {}
        self.seen: List[tuple] = []
        self.lock = threading.Lock()
        target = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                key = self.bearer()
                now = time.time()
                with target.lock:
                    w = target.windows.get(key)
                    if w is None or now >= w[0] + 60:
                        w = target.windows[key] = [now, 0, 0]
                    if key not in target.valid:
                        status = 401
                    elif w[1] + 1 > target.rpm or w[2] + target.cost > target.tpm:
                        status = 429
                    else:
                        w[1] += 1
                        w[2] += target.cost
                        status = 200
                    target.seen.append((now, key, status, self.path))
                    reset = f"{max(0, int(w[0] + 60 - now))}s"
                    headers = {"x-ratelimit-remaining-requests": str(target.rpm - int(w[1])),
                               "x-ratelimit-remaining-tokens": str(target.tpm - int(w[2])),
                               "x-ratelimit-reset-requests": reset,
                               "x-ratelimit-reset-tokens": reset}
                if status == 429:
                    headers["Retry-After"] = "7"
                body = json.dumps({"status": status, "usage": {"total_tokens": target.cost}}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

        self.server, self.url = serve(Handler)


class ForwardProxy(Served):
    """An HTTP forward proxy (absolute-URI requests) that records the requests it forwards."""

    def __init__(self) -> None:
        self.forwarded: List[tuple] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def do_GET(self) -> None:
                proxy.forwarded.append((self.path, self.headers.get("Authorization", "")))
                req = urllib.request.Request(self.path, headers={
                    k: v for k, v in self.headers.items()
                    if k.lower() not in ("proxy-connection", "connection", "host")})
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                try:
                    r = opener.open(req, timeout=10)
                    status, headers, body = r.status, r.headers, r.read()
                except urllib.error.HTTPError as e:
                    status, headers, body = e.code, e.headers, e.read()
                self.send_response(status)
                for k, v in headers.items():
                    if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server, self.url = serve(Handler)


@pytest.fixture
def proxy() -> Iterator[Served]:
    yield from running(ForwardProxy())


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
