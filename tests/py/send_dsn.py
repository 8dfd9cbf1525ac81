#!/usr/bin/env python3
"""Sends a delivery status notification (RFC 3464) composed with Python's email package
through smtplib, as a remote MTA would send a bounce to a message's return address: a
multipart/report with a text part, a message/delivery-status part about one recipient, and
the original's header (message/rfc822-headers). Prints "SENT" when the server took it.

Usage: send_dsn.py HOST PORT TO ORIGINAL_RCPT ACTION STATUS DIAGNOSTIC ORIGINAL_MESSAGE_ID
(DIAGNOSTIC "" for none)."""
import email.message
import email.policy
import smtplib
import sys

host, port, to, rcpt, action, status, diagnostic, msgid = sys.argv[1:9]

msg = email.message.EmailMessage(policy=email.policy.SMTP)
msg["From"] = "Mail Delivery System <MAILER-DAEMON@mta.example.net>"
msg["To"] = to
msg["Subject"] = "Undelivered Mail Returned to Sender"
msg["Auto-Submitted"] = "auto-replied"
msg.set_type("multipart/report")
msg.set_param("report-type", "delivery-status")
msg.preamble = "This is a MIME-encapsulated message."

human = email.message.EmailMessage(policy=email.policy.SMTP)
human.set_content(f"The message to {rcpt} could not be delivered.\n")
msg.attach(human)

status_part = email.message.Message(policy=email.policy.SMTP)
status_part.set_type("message/delivery-status")
per_message = email.message.Message()
per_message["Reporting-MTA"] = "dns; mta.example.net"
per_rcpt = email.message.Message()
per_rcpt["Final-Recipient"] = f"rfc822; {rcpt}"
per_rcpt["Action"] = action
per_rcpt["Status"] = status
per_rcpt["Remote-MTA"] = "dns; mx.example.net"
if diagnostic:
    per_rcpt["Diagnostic-Code"] = f"smtp; {diagnostic}"
status_part.set_payload([per_message, per_rcpt])
msg.attach(status_part)

headers = email.message.Message(policy=email.policy.SMTP)
headers.set_type("text/rfc822-headers")
headers.set_payload(f"Message-ID: {msgid}\r\nTo: {rcpt}\r\n")
msg.attach(headers)

with smtplib.SMTP(host, int(port), timeout=30) as s:
    s.sendmail("", [to], msg.as_bytes())
print("SENT", flush=True)
