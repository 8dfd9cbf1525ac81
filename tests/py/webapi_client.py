#!/usr/bin/env python3
"""Calls one method of a mox-compatible webapi with Python's urllib, as an application
would: HTTP basic authentication, the request as the form field "request" (what mox's own
client sends) or, with --json-body, as an application/json body.

Usage: webapi_client.py URL USER PASSWORD METHOD REQUEST_JSON [--json-body]
       webapi_client.py URL USER PASSWORD METHOD --oversize SIZE
           (announces a Content-Length of SIZE and sends no body: the answer to the head)
With CAFILE set in the environment, https URLs are verified against that PEM file.
Prints "STATUS <code>", the Content-Type and the body; exits 0 whatever the status."""
import base64
import http.client
import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request


def main():
    url, user, password, method = sys.argv[1:5]
    rest = sys.argv[5:]
    if rest and rest[0] == "--oversize":
        u = urllib.parse.urlsplit(url.rstrip("/") + "/" + method)
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=20)
        c.putrequest("POST", u.path)
        c.putheader("Content-Type", "application/json")
        c.putheader("Content-Length", rest[1])
        c.putheader("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
        c.endheaders()
        r = c.getresponse()
        print(f"STATUS {r.status}")
        print(f"CONTENT-TYPE {r.getheader('Content-Type', '')}")
        sys.stdout.write(r.read().decode("utf-8", "replace"))
        return 0
    if "--json-body" in rest:
        ctype, body = "application/json", rest[0].encode()
    else:
        ctype = "application/x-www-form-urlencoded"
        body = urllib.parse.urlencode({"request": rest[0]}).encode()
    req = urllib.request.Request(url.rstrip("/") + "/" + method, data=body, method="POST")
    req.add_header("Content-Type", ctype)
    if user:
        cred = base64.b64encode(f"{user}:{password}".encode()).decode()
        req.add_header("Authorization", "Basic " + cred)
    try:
        ctx = ssl.create_default_context(cafile=os.environ["CAFILE"]) if os.environ.get("CAFILE") else None
        with urllib.request.urlopen(req, timeout=20, context=ctx) as r:
            status, headers, data = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, headers, data = e.code, e.headers, e.read()
    except (ConnectionError, OSError) as e:
        # An oversize body may be refused before it is all sent: report what came back.
        print(f"ERROR {e}")
        return 0
    print(f"STATUS {status}")
    print(f"CONTENT-TYPE {headers.get('Content-Type', '')}")
    sys.stdout.write(data.decode("utf-8", "replace"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
