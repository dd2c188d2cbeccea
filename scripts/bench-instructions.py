#!/usr/bin/env python3
"""Instruction counts of a fixed workload (A/B on a noisy machine, where wall clock is not).

Starts `herald serve` under callgrind, a loopback sink, then:
  ingest phase: N single POST /api/v1/messages to a disabled webhook destination;
  deliver phase: enables it and waits until the sink has received all N.
Each phase is dumped separately (callgrind_control -z / -d), so start-up is not counted.
Prints instructions per message for each phase.
With --live the destination is enabled from the start (fresh messages are delivered while
others arrive, as in production): one phase, accept to delivery.

    scripts/bench-instructions.py [--bin target/release/herald] [-n 2000] [--live] [--out DIR]
"""
import argparse, glob, http.client, json, os, re, subprocess, tempfile, threading, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
from concurrent.futures import ThreadPoolExecutor

TOKEN = "hrld_benchadmin00_0123456789abcdefABCDEF0123456789"
received = 0
lock = threading.Lock()


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        global received
        self.rfile.read(int(self.headers.get("content-length", 0)))
        with lock:
            received += 1
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *a):
        pass


local = threading.local()


def call(base, method, path, body=None):
    """One request on this thread's kept-alive connection (as a real client would)."""
    conn = getattr(local, "conn", None)
    if conn is None:
        host, port = base.removeprefix("http://").split(":")
        conn = local.conn = http.client.HTTPConnection(host, int(port), timeout=120)
    data = json.dumps(body).encode() if body is not None else None
    headers = {"authorization": "Bearer " + TOKEN}
    if data is not None:
        headers["content-type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        out = r.read()
    except Exception:
        local.conn = None
        raise
    if r.status >= 300:
        raise RuntimeError(f"{method} {path}: {r.status} {out[:200]}")
    return r.status, out


def total_ir(path):
    for line in open(path):
        if line.startswith("summary:") or line.startswith("totals:"):
            return int(line.split()[1])
    raise SystemExit(f"no totals in {path}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/herald")
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--out", default=None)
    ap.add_argument("--live", action="store_true", help="deliver while accepting: one phase")
    a = ap.parse_args()
    out = a.out or tempfile.mkdtemp(prefix="herald-cg-")
    os.makedirs(out, exist_ok=True)
    sink = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    data = tempfile.mkdtemp(prefix="herald-cg-data-")
    port = 20000 + os.getpid() % 20000
    env = dict(os.environ, HERALD_ADMIN_TOKEN=TOKEN, HERALD_ALLOW_NETWORKS="127.0.0.0/8",
               HERALD_CONCURRENCY="512", HERALD_LOG="warn")
    env.pop("HERALD_CONFIG", None)
    env.pop("HERALD_DATABASE_URL", None)
    cg = os.path.join(out, "callgrind.out.%p")
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={cg}",
                             a.bin, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                call(base, "GET", "/healthz")
                break
            except Exception:
                time.sleep(0.2)
        spec = {"kind": "webhook", "url": f"http://127.0.0.1:{sink.server_port}/hook",
                "enabled": a.live, "max_in_flight": 128, "circuit_breaker": False}
        call(base, "PUT", "/api/v1/destinations/hook", spec)
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True, capture_output=True)

        def post(i):
            s, _ = call(base, "POST", "/api/v1/messages",
                        {"event_type": "bench.tick", "text": f"message {i}",
                         "payload": {"i": i}, "to": ["hook"]})
            assert s == 202, s
        with ThreadPoolExecutor(a.concurrency) as ex:
            list(ex.map(post, range(a.n)))
        if not a.live:
            subprocess.run(["callgrind_control", "-d", "ingest", str(proc.pid)], check=True, capture_output=True)
            call(base, "POST", "/api/v1/destinations/hook/enable")
        while True:
            with lock:
                if received >= a.n:
                    break
            time.sleep(0.2)
        time.sleep(0.5)  # let the last records commit
        phase = "live" if a.live else "deliver"
        subprocess.run(["callgrind_control", "-d", phase, str(proc.pid)], check=True, capture_output=True)
    finally:
        proc.terminate()
        proc.wait()
    files = sorted(glob.glob(os.path.join(out, "callgrind.out.*")))
    if a.live:
        live = [f for f in files if re.search(r"\.1$", f)]
        print(json.dumps({"n": a.n, "live_ir_per_msg": total_ir(live[0]) // a.n,
                          "live_file": live[0]}))
        return
    ingest = [f for f in files if re.search(r"\.1$", f)]
    deliver = [f for f in files if re.search(r"\.2$", f)]
    ir_i, ir_d = total_ir(ingest[0]), total_ir(deliver[0])
    print(json.dumps({"n": a.n, "ingest_ir_per_msg": ir_i // a.n, "deliver_ir_per_msg": ir_d // a.n,
                      "e2e_ir_per_msg": (ir_i + ir_d) // a.n, "ingest_file": ingest[0],
                      "deliver_file": deliver[0]}))


if __name__ == "__main__":
    main()
