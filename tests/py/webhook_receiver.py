#!/usr/bin/env python3
"""A webhook receiver for tests, with Python's http.server and hmac: checks each POST's
X-Rmox-Signature (t=UNIX,v1=HMAC-SHA256 of "UNIX." + body under SECRET), and per webhook
id (X-Rmox-Webhook-Id) answers the first attempt with 500, does not answer the second for
SLOW seconds (the sender's timeout must cut it), and takes the third and later with 204.
Each request is appended to LOG as one JSON line. Prints "PORT n" once listening; stops by
itself after LIFETIME seconds.

Usage: webhook_receiver.py SECRET LOG SLOW LIFETIME"""
import hashlib
import hmac
import http.server
import json
import sys
import threading
import time

SECRET, LOG, SLOW, LIFETIME = sys.argv[1].encode(), sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
attempts = {}
lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        sig = self.headers.get("X-Rmox-Signature", "")
        parts = dict(p.split("=", 1) for p in sig.split(",") if "=" in p)
        want = hmac.new(SECRET, parts.get("t", "").encode() + b"." + body, hashlib.sha256).hexdigest()
        sig_ok = hmac.compare_digest(want, parts.get("v1", ""))
        hook = self.headers.get("X-Rmox-Webhook-Id", "")
        with lock:
            n = attempts.get(hook, 0) + 1
            attempts[hook] = n
            with open(LOG, "a") as f:
                f.write(json.dumps({"path": self.path, "hook": hook, "attempt": n, "sig_ok": sig_ok,
                                    "header_attempt": self.headers.get("X-Rmox-Webhook-Attempt"),
                                    "body": json.loads(body or b"null")}) + "\n")
        if n == 1:
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif n == 2:
            time.sleep(SLOW)
            try:
                self.send_response(204)
                self.end_headers()
            except OSError:
                pass
        else:
            self.send_response(204)
            self.end_headers()

    def log_message(self, *args):
        pass


srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
srv.daemon_threads = True
print(f"PORT {srv.server_address[1]}", flush=True)
threading.Timer(LIFETIME, srv.shutdown).start()
srv.serve_forever()
