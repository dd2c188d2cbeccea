#!/usr/bin/env python3
"""A tiny webhook receiver for trying Herald locally (standard library only).

    WEBHOOK_SECRET=whsec_... python3 examples/receiver.py 9000

Prints every request and, when WEBHOOK_SECRET is set, checks its Standard Webhooks
signature. Answers 200.
"""
import base64
import hashlib
import hmac
import http.server
import json
import os
import sys

SECRET = os.environ.get("WEBHOOK_SECRET", "")


def verify(headers, body: bytes) -> str:
    if not SECRET:
        return "not checked (set WEBHOOK_SECRET)"
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    sigs = [s.split(",", 1)[1] for s in headers.get("webhook-signature", "").split() if s.startswith("v1,")]
    return "valid" if any(hmac.compare_digest(expected, s) for s in sigs) else "INVALID"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        print(f"{self.command} {self.path}  webhook-id={self.headers.get('webhook-id')}  signature {verify(self.headers, body)}")
        try:
            print(json.dumps(json.loads(body), ensure_ascii=False, indent=2))
        except ValueError:
            print(body.decode(errors="replace"))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    do_PUT = do_POST

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    print(f"listening on http://127.0.0.1:{port}")
    http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
