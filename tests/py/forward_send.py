#!/usr/bin/env python3
"""Sends one message with smtplib as a remote MTA (or a forwarder) would: from a chosen
loopback source address, with a chosen EHLO name, MAIL FROM and From header, without TLS.
Prints the final reply ("250 ..." or the refusal's code and text) on one line.

Usage: forward_send.py HOST PORT SOURCE_IP HELO MAIL_FROM RCPT HEADER_FROM SUBJECT"""
import smtplib
import sys

host, port, source, helo, mail_from, rcpt, header_from, subject = sys.argv[1:9]
msg = (
    f"From: <{header_from}>\r\nTo: <{rcpt}>\r\nSubject: {subject}\r\n"
    f"Message-Id: <{abs(hash((subject, rcpt)))}@forward.test>\r\n\r\n"
    f"{subject}: a message through the harness.\r\n"
).encode()
try:
    with smtplib.SMTP(host, int(port), local_hostname=helo, source_address=(source, 0), timeout=30) as s:
        s.ehlo(helo)
        code, text = s.mail(mail_from)
        if code != 250:
            print(code, text.decode(errors="replace"))
            sys.exit(0)
        code, text = s.rcpt(rcpt)
        if code not in (250, 251):
            print(code, text.decode(errors="replace"))
            sys.exit(0)
        code, text = s.data(msg)
        print(code, text.decode(errors="replace").replace("\n", " "))
except smtplib.SMTPResponseException as e:
    print(e.smtp_code, e.smtp_error.decode(errors="replace").replace("\n", " "))
