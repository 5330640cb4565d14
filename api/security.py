"""Who may call what, and how often: bearer tokens, the client's address, rate limits.

Rate limits use `limits` (the engine under Flask-Limiter) with in-memory storage, per process:
the cabinet a limit counts is known only once the view has validated the body, so the views call
`rate_limit()` themselves. Counts are not shared between gunicorn workers or Lambda containers
(README: Security); on AWS the API Gateway throttle caps the whole stack.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time

from flask import Flask, current_app, request

from api.errors import error_response
from api.machines import same_secret
from api.settings import Settings


class Refused(Exception):
    """An answer with its own status, message and headers (401, 403, 429, 503)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}

    def response(self):
        response = error_response(self.status, self.message)
        response.headers.update(self.headers)
        return response


def bearer_token() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def require_link_permission(settings: Settings) -> None:
    """POST /create-payment-link: the operator's token, unless MACHINE_IDS names the cabinets
    (then anyone may ask, but only for those, and each link is made once and then cached)."""
    token, operator_token = bearer_token(), settings.security.operator_token
    if token:
        if not same_secret(token, operator_token):
            raise Refused(401, "the operator token is not valid")
        return
    if settings.machine_ids:
        return
    if not operator_token:
        raise Refused(
            503, "payment link creation is off: the server sets neither OPERATOR_TOKEN nor "
            "MACHINE_IDS"
        )
    raise Refused(
        401, "'Authorization: Bearer <OPERATOR_TOKEN>' is required (arcade qr sends it from .env)"
    )


def client_address() -> str:
    return request.remote_addr or "unknown"


def client_in(networks: tuple[str, ...], trusted_proxy_hops: int) -> bool:
    """The client is on this machine or on a network the operator named.

    A request that came through a proxy we were not told about (it added X-Forwarded-For or
    Forwarded) is not "on this machine", whatever address the proxy itself has.
    """
    proxied = request.headers.get("X-Forwarded-For") or request.headers.get("Forwarded")
    if proxied and not trusted_proxy_hops:
        return False
    try:
        address = ipaddress.ip_address(client_address())
    except ValueError:
        return False
    return address.is_loopback or any(address in ipaddress.ip_network(n) for n in networks)


class RateLimits:
    """Moving-window limits per client address and per cabinet, in this process's memory."""

    def __init__(self, per_client: str, per_cabinet: str) -> None:
        self.per_client, self.per_cabinet = per_client, per_cabinet
        self._limiter = None
        self._lock = threading.Lock()

    def _strategy(self):
        # Imported on the first limited request: webhooks (the hot path) never pay for it.
        with self._lock:
            if self._limiter is None:
                from limits.storage import MemoryStorage
                from limits.strategies import MovingWindowRateLimiter

                self._limiter = MovingWindowRateLimiter(MemoryStorage())
        return self._limiter

    def hit(self, limit: str, scope: str, key: str, what: str) -> None:
        """Count one request; Refused(429) with Retry-After once over the limit."""
        if not limit:
            return
        from limits import parse_many

        limiter = self._strategy()
        for item in parse_many(limit):
            if not limiter.hit(item, scope, key):
                reset = limiter.get_window_stats(item, scope, key).reset_time
                wait = max(1, math.ceil(reset - time.time()))
                raise Refused(
                    429, f"too many requests {what} ({item}); retry in {wait} s",
                    {"Retry-After": str(wait)},
                )


def rate_limits() -> RateLimits:
    return current_app.extensions["arcade_rate_limits"]


def limit_client(scope: str) -> None:
    limits = rate_limits()
    limits.hit(limits.per_client, scope, client_address(), "from this address")


def limit_cabinet(scope: str, machine_id: str) -> None:
    limits = rate_limits()
    limits.hit(limits.per_cabinet, scope, machine_id, f"for cabinet {machine_id}")


def init_app(app: Flask, settings: Settings) -> None:
    security = settings.security
    if security.trusted_proxy_hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # Only as many X-Forwarded-For entries as there are proxies we run: the rest is forgeable.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=security.trusted_proxy_hops)
    app.register_error_handler(Refused, Refused.response)
    app.extensions["arcade_rate_limits"] = RateLimits(
        security.rate_limit_per_client, security.rate_limit_per_cabinet
    )
