#!/usr/bin/env python3
"""Sends one request to the web inbox of rmox localserve (Mailpit's /api/v1/) with Python's
urllib, as a test suite written for Mailpit would.

Usage: inbox_client.py METHOD URL [BODY]
       inbox_client.py METHOD URL --oversize SIZE
           (announces a Content-Length of SIZE and sends no body: the answer to the head)
Prints "STATUS <code>", "CONTENT-TYPE <value>", "ALLOW <value>" and the body; exits 0
whatever the status, 1 when no HTTP answer came."""
import http.client
import sys
import urllib.error
import urllib.parse
import urllib.request


def show(status, headers, data):
    print(f"STATUS {status}")
    print(f"CONTENT-TYPE {headers.get('Content-Type', '')}")
    print(f"ALLOW {headers.get('Allow', '')}")
    sys.stdout.write(data.decode("utf-8", "replace"))


def main():
    method, url = sys.argv[1:3]
    rest = sys.argv[3:]
    if rest and rest[0] == "--oversize":
        u = urllib.parse.urlsplit(url)
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=20)
        c.putrequest(method, u.path + (f"?{u.query}" if u.query else ""))
        c.putheader("Content-Type", "application/json")
        c.putheader("Content-Length", rest[1])
        c.endheaders()
        r = c.getresponse()
        show(r.status, r.headers, r.read())
        return 0
    body = rest[0].encode() if rest else None
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            show(r.status, r.headers, r.read())
    except urllib.error.HTTPError as e:
        show(e.code, e.headers, e.read())
    except (ConnectionError, OSError) as e:
        print(f"ERROR {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
