"""A real SMTP server (aiosmtpd) for tests/notify_email.rs.

Binds 127.0.0.1 on a free port, prints `PORT <n>` on stdout, then one JSON
line per accepted message: envelope sender, recipients, Subject,
Message-ID, X-Varde-Idempotency-Key and the decoded text body. Exits when
its stdin closes (the test process went away) or when killed.

Run with Debian's /usr/bin/python3 (package python3-aiosmtpd).
"""

import argparse
import asyncio
import email
import email.policy
import json
import logging
import os
import ssl
import sys
import threading

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--tls", choices=["none", "starttls", "implicit"], default="none")
    p.add_argument("--cert", help="server certificate chain (PEM)")
    p.add_argument("--key", help="server private key (PEM)")
    p.add_argument("--auth", help="USER:PASSWORD required to send")
    p.add_argument("--reject-rcpt", action="append", default=[],
                   help="answer 550 to RCPT TO for this address")
    p.add_argument("--tempfail-rcpt", action="append", default=[],
                   help="answer 451 to RCPT TO for this address")
    return p.parse_args()


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Handler:
    def __init__(self, reject, tempfail):
        self.reject = set(reject)
        self.tempfail = set(tempfail)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.reject:
            return "550 5.1.1 mailbox unavailable"
        if address in self.tempfail:
            return "451 4.3.0 temporary failure, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        part = msg.get_body(preferencelist=("plain",))
        emit({
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "subject": str(msg["subject"]),
            "message_id": str(msg["message-id"]),
            "idempotency_key": str(msg.get("x-varde-idempotency-key", "")),
            "content_type": str(msg.get("content-type", "")),
            "body": part.get_content() if part is not None else "",
            "tls": server.transport.get_extra_info("ssl_object") is not None,
            "authenticated": bool(session.authenticated),
        })
        return "250 Message accepted for delivery"


def authenticator(user, password):
    def check(server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword)
              and auth_data.login == user.encode()
              and auth_data.password == password.encode())
        return AuthResult(success=ok, handled=False)
    return check


def watch_stdin(loop):
    # The test closes our stdin (or dies): stop.
    sys.stdin.buffer.read()
    os._exit(0)


async def main():
    args = parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    ctx = None
    if args.tls != "none":
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.cert, args.key)

    handler = Handler(args.reject_rcpt, args.tempfail_rcpt)
    kwargs = {"hostname": "smtp.test"}
    if args.tls == "starttls":
        kwargs.update(tls_context=ctx, require_starttls=True)
    if args.auth:
        user, password = args.auth.split(":", 1)
        kwargs.update(authenticator=authenticator(user, password), auth_required=True,
                      auth_require_tls=args.tls == "starttls")

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, **kwargs),
        host="127.0.0.1",
        port=0,
        ssl=ctx if args.tls == "implicit" else None,
    )
    port = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"PORT {port}\n")
    sys.stdout.flush()
    threading.Thread(target=watch_stdin, args=(loop,), daemon=True).start()
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
