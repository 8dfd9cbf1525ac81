#!/usr/bin/env python3
"""An aiosmtpd server for the client interop tests (tests/tests/client_interop.rs).

Listens on HOST:PORT (loopback only), writes every accepted message to DIR as N.eml (the
content exactly as received, dot-unstuffed) and then N.meta (the envelope, one "key value"
per line; its presence means the .eml is complete). Exits by itself after --lifetime
seconds, so a test that dies cannot leave it running for long.

Options: --starttls CERT KEY offers STARTTLS (and --require-starttls refuses mail before
it), --auth USER PASS offers AUTH PLAIN/LOGIN accepting only that user (allowed without TLS
unless --auth-require-tls), --reject ADDR answers 550 to RCPT TO ADDR, --pipelining adds
PIPELINING to the EHLO reply (aiosmtpd reads commands in order from a buffered stream, it
just does not announce it).
"""

import argparse
import asyncio
import ipaddress
import os
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Handler:
    def __init__(self, directory, reject, pipelining):
        self.directory = directory
        self.reject = {r.lower() for r in reject}
        self.pipelining = pipelining
        self.count = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.pipelining:
            # Before the last line ("250 HELP").
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower() in self.reject:
            return "550 5.1.1 <%s>: recipient refused by test" % address
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.append(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        base = os.path.join(self.directory, str(self.count))
        with open(base + ".eml.tmp", "wb") as f:
            f.write(envelope.original_content)
        os.rename(base + ".eml.tmp", base + ".eml")
        auth = session.auth_data if isinstance(session.auth_data, str) else ""
        lines = [
            "helo " + (session.host_name or ""),
            "tls " + ("1" if session.ssl is not None else "0"),
            "auth " + auth,
            "mail_from " + (envelope.mail_from or ""),
            "mail_options " + " ".join(envelope.mail_options),
        ]
        lines += ["rcpt " + r for r in envelope.rcpt_tos]
        with open(base + ".meta.tmp", "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        os.rename(base + ".meta.tmp", base + ".meta")
        return "250 2.0.0 Message accepted for delivery"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--lifetime", type=float, default=120.0)
    p.add_argument("--starttls", nargs=2, metavar=("CERT", "KEY"))
    p.add_argument("--require-starttls", action="store_true")
    p.add_argument("--auth", nargs=2, metavar=("USER", "PASS"))
    p.add_argument("--auth-require-tls", action="store_true")
    p.add_argument("--reject", action="append", default=[])
    p.add_argument("--pipelining", action="store_true")
    a = p.parse_args()

    if not ipaddress.ip_address(a.host).is_loopback:
        sys.exit("refusing to listen on a non-loopback address: " + a.host)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    handler = Handler(a.dir, a.reject, a.pipelining)
    kw = dict(
        hostname="aiosmtpd.test.example",
        enable_SMTPUTF8=True,
        timeout=60,
        loop=loop,
    )
    if a.starttls:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(a.starttls[0], a.starttls[1])
        kw["tls_context"] = ctx
        kw["require_starttls"] = a.require_starttls
    if a.auth:
        user, password = a.auth[0].encode(), a.auth[1].encode()

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (isinstance(auth_data, LoginPassword)
                  and auth_data.login == user and auth_data.password == password)
            login = auth_data.login.decode("utf-8", "replace") if ok else None
            # handled=False: aiosmtpd then answers 535 itself (the default, True, means
            # "the authenticator already replied" and the client would wait forever).
            return AuthResult(success=ok, handled=False, auth_data=login)

        kw["authenticator"] = authenticator
        kw["auth_require_tls"] = a.auth_require_tls
    else:
        # Without an authenticator aiosmtpd would still announce AUTH and fail it.
        kw["auth_exclude_mechanism"] = ["LOGIN", "PLAIN"]

    server = loop.run_until_complete(
        loop.create_server(lambda: SMTP(handler, **kw), host=a.host, port=a.port))
    loop.call_later(a.lifetime, loop.stop)
    print("READY", flush=True)
    try:
        loop.run_forever()
    finally:
        server.close()


if __name__ == "__main__":
    main()
