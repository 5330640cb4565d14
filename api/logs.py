"""One JSON line per request outcome: what happened, to which cabinet, how fast.

Handlers put the interesting facts in `flask.g.log_fields` (machine, session, event, result);
payloads and secrets are never logged.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from flask import Flask, g, request

log = logging.getLogger("arcade.requests")


class JsonLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        if fields is None:
            fields = {"level": record.levelname.lower(), "message": record.getMessage()}
            if record.exc_info:
                fields["exception"] = self.formatException(record.exc_info)
        return json.dumps(fields, separators=(",", ":"), default=str)


class StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is now (gunicorn, Lambda and test capture all swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging() -> None:
    root = logging.getLogger("arcade")
    if not root.handlers:
        handler = StderrHandler()
        handler.setFormatter(JsonLineFormatter())
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False


def note(**fields: object) -> None:
    """Add facts to this request's log line."""
    g.setdefault("log_fields", {}).update(fields)


def _start_timer() -> None:
    g.started = time.perf_counter()


def _log_outcome(response):
    started = g.get("started", time.perf_counter())
    fields = {
        "method": request.method,
        "path": request.path,
        "status": response.status_code,
        "latency_ms": round((time.perf_counter() - started) * 1000, 2),
    }
    fields.update(g.get("log_fields", {}))
    log.info("request", extra={"fields": fields})
    return response


def init_app(app: Flask) -> None:
    configure_logging()
    app.before_request(_start_timer)
    app.after_request(_log_outcome)
