"""Test support: a real ``herald serve`` child process and loopback fake receivers.

Everything listens on and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import herald

REPO_ROOT = Path(__file__).resolve().parents[3]
ADMIN_TOKEN = "hrld_pytest_admin_token_0123456789"


def herald_bin() -> Path:
    """``HERALD_BIN``, else ``<repo>/target/debug/herald`` (``scripts/python-tests.sh`` builds it)."""
    env = os.environ.get("HERALD_BIN")
    path = Path(env) if env else REPO_ROOT / "target" / "debug" / "herald"
    if not path.is_file() or not os.access(path, os.X_OK):
        raise RuntimeError(
            f"no herald binary at {path}: run `cargo build -p herald` (scripts/python-tests.sh does) "
            "or set HERALD_BIN"
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05, what: str = "condition") -> Any:
    """Polls ``predicate`` until it returns something truthy; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class HeraldServer:
    """``herald serve`` on a free loopback port with a temporary data dir."""

    def __init__(self, extra_env: Optional[Dict[str, str]] = None):
        self.data_dir = Path(tempfile.mkdtemp(prefix="herald-pytest-"))
        self.extra_env = extra_env or {}
        self.proc: Optional[subprocess.Popen] = None
        self.port = 0
        self.url = ""
        self.log_path = self.data_dir / "server.log"

    def start(self) -> "HeraldServer":
        binary = herald_bin()
        for _ in range(3):  # a port taken between free_port() and bind is retried
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
            env.update(
                {
                    "HERALD_ADMIN_TOKEN": ADMIN_TOKEN,
                    "HERALD_ALLOW_NETWORKS": "127.0.0.0/8",
                    "HERALD_LOG": os.environ.get("HERALD_TEST_LOG", "warn"),
                    "HERALD_SQLITE_SYNCHRONOUS": "normal",
                }
            )
            env.update(self.extra_env)
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                [str(binary), "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", str(self.data_dir / "data")],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            log.close()
            if self._wait_ready():
                return self
            self.stop()
        raise RuntimeError(f"herald serve did not become ready; log:\n{self.log_text()}")

    def _wait_ready(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        return False

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    # ---- API helpers (admin token) ----

    def admin(self, **kwargs: Any) -> herald.Client:
        return herald.Client(self.url, ADMIN_TOKEN, retries=0, **kwargs)

    def api(self, method: str, path: str, body: Any = None) -> Any:
        return self.admin().request(method, path, body).body

    def put_destination(self, name: str, spec: Dict[str, Any]) -> Any:
        return self.api("PUT", f"/api/v1/destinations/{name}", spec)

    def token(self, scopes: List[str], name: str = "pytest") -> str:
        return self.api("POST", "/api/v1/tokens", {"name": name, "scopes": scopes})["token"]

    def message(self, message_id: str) -> Dict[str, Any]:
        return self.api("GET", f"/api/v1/messages/{message_id}")

    def deliveries(self, destination: str) -> List[Dict[str, Any]]:
        return self.api("GET", f"/api/v1/deliveries?destination={destination}&limit=1000")["items"]

    def error_groups(self) -> List[Dict[str, Any]]:
        return self.api("GET", "/api/v1/error-groups?limit=1000")["items"]


class QuietServer(ThreadingHTTPServer):
    """A threading HTTP server that does not print tracebacks of connections cut on purpose."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class Recorded:
    """One request a fake received."""

    def __init__(self, method: str, path: str, headers: Dict[str, str], body: bytes):
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.status: Optional[int] = None  # what the fake answered

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"Recorded({self.method} {self.path} {self.body[:200]!r})"


class Receiver:
    """A loopback HTTP server that records every request and answers ``status`` / ``reply``.

    Used as a webhook/http receiver and as a Slack incoming-webhook fake (Slack answers
    ``200`` with the plain-text body ``ok``, shared/PROVIDERS.md). ``check``, if given, sees
    each request before it is answered and may return another status to answer with (e.g.
    ``401`` when a signature does not verify); ``None`` keeps ``status``.
    """

    def __init__(
        self,
        status: int = 200,
        reply: bytes = b"ok",
        content_type: str = "text/plain",
        check: Optional[Callable[["Recorded"], Optional[int]]] = None,
    ):
        self.status = status
        self.reply = reply
        self.content_type = content_type
        self.check = check
        self.requests: List[Recorded] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                rec = Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                status = outer.status
                if outer.check is not None:
                    override = outer.check(rec)
                    if override is not None:
                        status = override
                rec.status = status
                with outer._lock:
                    outer.requests.append(rec)
                self.send_response(status)
                self.send_header("content-type", outer.content_type)
                self.send_header("content-length", str(len(outer.reply)))
                self.end_headers()
                self.wfile.write(outer.reply)

            do_POST = do_PUT = do_PATCH = do_GET = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def received(self) -> List[Recorded]:
        with self._lock:
            return list(self.requests)

    def wait_for(self, count: int = 1, timeout: float = 30.0) -> List[Recorded]:
        return wait_until(lambda: len(self.received()) >= count and self.received(), timeout, what=f"{count} request(s) at {self.url}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FlakyProxy:
    """A loopback HTTP proxy in front of Herald that misbehaves for the first requests.

    ``plan`` lists what to do with each incoming request in turn, then it forwards:
    ``"503"`` answers 503 with ``Retry-After: 0`` without forwarding; ``"drop-after"``
    forwards the request to Herald (so it takes effect) and then closes the connection
    without answering — the client sees a connection error although Herald accepted it.
    """

    def __init__(self, target: str, plan: List[str]):
        self.target = target
        self.plan = list(plan)
        self.seen: List[Tuple[str, Optional[int]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                action = outer.plan.pop(0) if outer.plan else "forward"
                if action == "503":
                    outer.seen.append((action, None))
                    payload = b'{"type":"urn:test:unavailable","title":"Service unavailable","status":503,"detail":"flaky"}'
                    self.send_response(503)
                    self.send_header("content-type", "application/problem+json")
                    self.send_header("retry-after", "0")
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")}
                req = urllib.request.Request(outer.target + self.path, data=body, method=self.command, headers=headers)
                try:
                    with urllib.request.urlopen(req, timeout=10) as r:
                        status, rheaders, rbody = r.status, r.headers, r.read()
                except urllib.error.HTTPError as e:
                    status, rheaders, rbody = e.code, e.headers, e.read()
                outer.seen.append((action, status))
                if action == "drop-after":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.send_response(status)
                for k, v in rheaders.items():
                    if k.lower() not in ("content-length", "connection", "transfer-encoding", "date", "server"):
                        self.send_header(k, v)
                self.send_header("content-length", str(len(rbody)))
                self.end_headers()
                self.wfile.write(rbody)

            do_POST = do_GET = do_PUT = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class BlackHole:
    """A loopback TCP server that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns: List[socket.socket] = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self._stop = True
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)  # the client's pending read ends now
            except OSError:
                pass
            c.close()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes accept(); stops taking connections
        except OSError:
            pass
        self.sock.close()


def run_python(code: str, env: Dict[str, str], timeout: float = 120.0) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter (for SDKs with process-global state, like Sentry's)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    full_env.update(env)
    proc = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"subprocess failed ({proc.returncode}):\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc
