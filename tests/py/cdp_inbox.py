#!/usr/bin/python3
"""Drives headless Chromium over the DevTools protocol (python3-websocket) through the
localserve web inbox, as a user would: open the page, wait until it has drawn the (empty)
list, run SEND_CMD (which sends a message), wait for the message's row to appear without a
reload, click it, and print what the page shows.

Usage: cdp_inbox.py CHROMIUM URL PROFILE_DIR SEND_CMD...
Prints lines: FIRST_COUNT n, SENT rc, ROW <html>, SAME_PAGE true|false, VIEW <html>.
Every wait is bounded; exits 1 with a message on a timeout."""
import json
import os
import subprocess
import sys
import time
import urllib.request

import websocket


def fail(msg):
    print("FAIL " + msg, flush=True)
    sys.exit(1)


def main():
    chromium, url, profile = sys.argv[1:4]
    send_cmd = sys.argv[4:]
    proc = subprocess.Popen(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-extensions", "--disable-background-networking",
         "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
         f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        run(proc, url, profile, send_cmd)
    finally:
        proc.kill()
        proc.wait(timeout=20)


def run(proc, url, profile, send_cmd):
    port_file = os.path.join(profile, "DevToolsActivePort")
    deadline = time.time() + 30
    while not os.path.exists(port_file) or not open(port_file).read().strip():
        if time.time() > deadline or proc.poll() is not None:
            fail("chromium did not start its DevTools endpoint")
        time.sleep(0.1)
    port = open(port_file).read().split()[0]
    targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
    page = next(t for t in targets if t.get("type") == "page")
    ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=20)
    seq = [0]

    def call(method, **params):
        seq[0] += 1
        ws.send(json.dumps({"id": seq[0], "method": method, "params": params}))
        while True:
            msg = json.loads(ws.recv())
            if msg.get("id") == seq[0]:
                if "error" in msg:
                    fail(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def evaluate(expr):
        r = call("Runtime.evaluate", expression=expr, returnByValue=True)
        return r.get("result", {}).get("value")

    def wait_for(expr, what, secs=30):
        end = time.time() + secs
        while time.time() < end:
            v = evaluate(expr)
            if v:
                return v
            time.sleep(0.2)
        fail(f"timed out waiting for {what}")

    call("Page.enable")
    call("Page.navigate", url=url)
    wait_for("document.body && document.body.dataset.polls && Number(document.body.dataset.polls) >= 1",
             "the page to draw its list")
    # A marker in the page's JavaScript state: gone if the page reloads.
    evaluate("window.__rmoxMarker = 'same-page'")
    print("FIRST_COUNT " + str(evaluate("document.body.dataset.firstCount")), flush=True)
    rc = subprocess.run(send_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60).returncode
    print(f"SENT {rc}", flush=True)
    row = wait_for("(document.querySelector('tr.message') || {}).outerHTML", "the message's row")
    print("ROW " + row.replace("\n", " "), flush=True)
    print("SAME_PAGE " + str(evaluate("window.__rmoxMarker === 'same-page'")).lower(), flush=True)
    evaluate("document.querySelector('tr.message').click()")
    wait_for("!!(document.getElementById('subject') && document.getElementById('text'))", "the message view")
    # Give the HTML part's frame time to load (and to try anything it would).
    time.sleep(1.5)
    print("VIEW " + evaluate("document.getElementById('view').outerHTML").replace("\n", " "), flush=True)
    call("Browser.close")


if __name__ == "__main__":
    main()
