#!/usr/bin/env python3
"""Sends one message with Python's smtplib, for rmox's end-to-end tests.

Exit codes: 0 sent; 2 an SMTP error (printed as "SMTPERR <code> <text>"); 1 anything else.
TLS certificate verification is off: localserve uses a self-signed certificate.
"""

import argparse
import smtplib
import ssl
import sys


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mode", choices=["plain", "starttls", "tls"], default="plain")
    p.add_argument("--auth", choices=["none", "PLAIN", "LOGIN", "CRAM-MD5"], default="none")
    p.add_argument("--user", default="")
    p.add_argument("--password", default="")
    p.add_argument("--mail-from", required=True)
    p.add_argument("--to", action="append", required=True)
    p.add_argument("--from-header", default=None)
    p.add_argument("--subject", required=True)
    p.add_argument("--body", default="Hello from smtplib.\r\n")
    p.add_argument("--body-repeat", type=int, default=0, help="body of N fixed 70-octet lines instead")
    a = p.parse_args()

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE

    frm = a.from_header or a.mail_from
    if a.body_repeat:
        # A trailing dot in each line exercises dot handling; no line starts with one.
        a.body = "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .!\r\n" * a.body_repeat
    msg = (
        "From: <%s>\r\nTo: %s\r\nSubject: %s\r\nMessage-Id: <%s@e2e.example>\r\n\r\n%s"
        % (frm, ", ".join("<%s>" % t for t in a.to), a.subject, abs(hash(a.subject)), a.body)
    )
    try:
        if a.mode == "tls":
            s = smtplib.SMTP_SSL(a.host, a.port, timeout=20, context=ctx)
        else:
            s = smtplib.SMTP(a.host, a.port, timeout=20)
        s.ehlo("e2e.example")
        if a.mode == "starttls":
            s.starttls(context=ctx)
            s.ehlo("e2e.example")
            if not s.sock.cipher():
                print("no TLS after STARTTLS")
                return 1
        if a.auth != "none":
            offered = s.esmtp_features.get("auth", "").upper().split()
            if a.auth not in offered:
                print("mechanism %s not offered: %r" % (a.auth, offered))
                return 1
            s.user, s.password = a.user, a.password
            fn = {"PLAIN": s.auth_plain, "LOGIN": s.auth_login, "CRAM-MD5": s.auth_cram_md5}[a.auth]
            # Force exactly this mechanism (smtplib's login() would pick one itself).
            s.auth(a.auth, fn, initial_response_ok=(a.auth != "CRAM-MD5"))
        refused = s.sendmail(a.mail_from, a.to, msg.encode("utf-8"))
        if refused:
            print("refused recipients: %r" % (refused,))
            return 2
        s.quit()
    except smtplib.SMTPResponseException as e:
        text = e.smtp_error.decode("utf-8", "replace") if isinstance(e.smtp_error, bytes) else str(e.smtp_error)
        print("SMTPERR %d %s" % (e.smtp_code, text.replace("\n", " ")))
        return 2
    except smtplib.SMTPRecipientsRefused as e:
        for rcpt, (code, text) in e.recipients.items():
            print("SMTPERR %d %s" % (code, text.decode("utf-8", "replace")))
            return 2
    except Exception as e:  # noqa: BLE001
        print("ERROR %s: %s" % (type(e).__name__, e))
        return 1
    print("SENT")
    return 0


if __name__ == "__main__":
    sys.exit(main())
