#!/usr/bin/python3
"""dkimpy (Debian python3-dkim) as the other side of rmox's DKIM interop tests.

  dkimpy_tool.py sign --domain D --selector S --key FILE --algo rsa|ed25519 --canon H/B < msg
      prints the DKIM-Signature header dkimpy makes (prepend it to the message).
      ed25519 keys: the PKCS#8 PEM rmox writes; rsa keys: PKCS#1 PEM.
  dkimpy_tool.py verify --record FILE < msg
      verifies the first signature; DNS answers come from FILE (the TXT record text,
      unquoted) for the name the signature points at, so no DNS server is needed.
  dkimpy_tool.py verify --server IP < msg
      the same with the key record asked from the DNS server at IP (dnspython).
      Prints "pass" and exits 0, or "fail" and exits 3.
Exit 1: anything else.
"""

import argparse
import base64
import re
import sys

import dkim


def ed25519_seed_b64(pem):
    m = re.search(rb"-----BEGIN PRIVATE KEY-----(.*?)-----END PRIVATE KEY-----", pem, re.S)
    if m is None:
        raise SystemExit("not a PKCS#8 PEM key")
    der = base64.b64decode(b"".join(m.group(1).split()))
    # PKCS#8 for Ed25519 ends with OCTET STRING { OCTET STRING (32 bytes seed) }.
    return base64.b64encode(der[-32:])


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sign")
    s.add_argument("--domain", required=True)
    s.add_argument("--selector", required=True)
    s.add_argument("--key", required=True)
    s.add_argument("--algo", choices=["rsa", "ed25519"], required=True)
    s.add_argument("--canon", default="relaxed/relaxed")
    v = sub.add_parser("verify")
    v.add_argument("--record", default=None)
    v.add_argument("--server", default=None)
    v.add_argument("--name", default=None)
    a = p.parse_args()
    msg = sys.stdin.buffer.read()
    if a.cmd == "sign":
        key = open(a.key, "rb").read()
        if a.algo == "ed25519":
            priv, alg = ed25519_seed_b64(key), b"ed25519-sha256"
        else:
            priv, alg = key, b"rsa-sha256"
        h, b = a.canon.split("/")
        sig = dkim.sign(
            msg,
            a.selector.encode(),
            a.domain.encode(),
            priv,
            canonicalize=(h.encode(), b.encode()),
            signature_algorithm=alg,
            include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
        )
        sys.stdout.buffer.write(sig)
        return 0
    asked = []
    if a.server is not None:
        import dns.resolver

        r = dns.resolver.Resolver(configure=False)
        r.nameservers = [a.server]

        def dnsfunc(name, timeout=5):
            asked.append(name)
            try:
                ans = r.resolve(name.decode().rstrip("."), "TXT", lifetime=timeout)
            except Exception:
                return None
            return b"".join(ans[0].strings)
    else:
        record = open(a.record, "rb").read().strip()

        def dnsfunc(name, timeout=5):
            asked.append(name)
            if a.name is not None and name.decode().rstrip(".").lower() != a.name.lower():
                return None
            return record

    ok = dkim.verify(msg, dnsfunc=dnsfunc)
    print("pass" if ok else "fail", b" ".join(asked).decode())
    return 0 if ok else 3


if __name__ == "__main__":
    sys.exit(main())
