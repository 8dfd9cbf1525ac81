#!/usr/bin/env python3
"""A counting SMTP sink for the outgoing-durability tests (tests/tests/kill_outgoing.rs).

Listens on HOST:PORT (loopback only) with the standard library's asyncio only, answers
EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP and QUIT, and for every message accepted appends
one line to --log: its Subject field value. The line is written and flushed before the
final 250 is sent, so every message the sender was told was taken is in the log. With
--delay-ms the 250 after the data comes that much later (a window in which the sender has
sent the final dot and waits); with --quit-delay-ms the 221 after QUIT comes that much
later. Exits by itself after --lifetime seconds.
"""

import argparse
import asyncio
import ipaddress
import sys


class Sink:
    def __init__(self, log, delay, quit_delay):
        self.log = open(log, "a", buffering=1)
        self.delay = delay
        self.quit_delay = quit_delay

    async def session(self, reader, writer):
        def send(line):
            writer.write(line.encode() + b"\r\n")

        try:
            send("220 sink.test ESMTP counting sink")
            await writer.drain()
            while True:
                line = await reader.readline()
                if not line:
                    return
                verb = line.decode("latin-1").strip().split(" ", 1)[0].upper()
                if verb == "EHLO":
                    send("250-sink.test")
                    send("250-8BITMIME")
                    send("250-PIPELINING")
                    send("250 SMTPUTF8")
                elif verb in ("HELO", "MAIL", "RCPT", "RSET", "NOOP"):
                    send("250 ok")
                elif verb == "DATA":
                    send("354 go on")
                    await writer.drain()
                    subject = ""
                    in_header = True
                    while True:
                        d = await reader.readline()
                        if not d:
                            return
                        if d == b".\r\n":
                            break
                        if in_header:
                            if d in (b"\r\n", b"\n"):
                                in_header = False
                            elif d.lower().startswith(b"subject:"):
                                subject = d[8:].decode("latin-1").strip()
                    if self.delay:
                        await asyncio.sleep(self.delay)
                    self.log.write(subject + "\n")
                    self.log.flush()
                    send("250 ok: queued")
                elif verb == "QUIT":
                    if self.quit_delay:
                        await asyncio.sleep(self.quit_delay)
                    send("221 bye")
                    await writer.drain()
                    return
                else:
                    send("500 unknown command")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--delay-ms", type=int, default=0)
    p.add_argument("--quit-delay-ms", type=int, default=0)
    p.add_argument("--lifetime", type=int, default=120)
    a = p.parse_args()
    if not ipaddress.ip_address(a.host).is_loopback:
        sys.exit("loopback addresses only")
    sink = Sink(a.log, a.delay_ms / 1000.0, a.quit_delay_ms / 1000.0)
    server = await asyncio.start_server(sink.session, a.host, a.port, reuse_address=True)
    async with server:
        await asyncio.sleep(a.lifetime)


asyncio.run(main())
