"""HTTPS-only answers: Strict-Transport-Security on every response served over HTTPS (directly by
`labfleet serve --tls`, or by the district's reverse proxy that says so in X-Forwarded-Proto)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def served_over_https(scope: Scope) -> bool:
    """The request reached us over HTTPS: its own scheme, or the proxy's X-Forwarded-Proto (first hop)."""
    if scope.get("scheme") == "https":
        return True
    for name, value in scope.get("headers", ()):
        if name == b"x-forwarded-proto":
            return value.split(b",")[0].strip().lower() == b"https"
    return False


class HstsMiddleware:
    """Adds `Strict-Transport-Security: max-age=<s>` to HTTPS answers. Browsers ignore the header over plain
    HTTP (RFC 6797 8.1), so a client that fakes X-Forwarded-Proto on plain HTTP gains nothing."""

    def __init__(self, app: ASGIApp, max_age_s: int) -> None:
        self.app = app
        self.header = (b"strict-transport-security", f"max-age={max_age_s}".encode())
        self.enabled = max_age_s > 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.enabled or not served_over_https(scope):
            await self.app(scope, receive, send)
            return

        async def send_with_hsts(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), self.header]
            await send(message)

        await self.app(scope, receive, send_with_hsts)
