"""Every error is JSON `{"error": "..."}` — 404 and 405 too — and never a traceback."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger("arcade.api")


def error_response(status: int, message: str):
    response = jsonify(error=message)
    response.status_code = status
    return response


def _http_error(error: HTTPException):
    response = error_response(error.code or 500, error.description or error.name)
    if error.code == 405 and error.valid_methods:
        response.headers["Allow"] = ", ".join(error.valid_methods)
    return response


def _unexpected_error(error: Exception):
    # The details go to the server log only; the client learns nothing about internals.
    log.exception("unhandled error: %s", type(error).__name__)
    return error_response(500, "internal error; the request can be retried")


def init_app(app: Flask) -> None:
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
