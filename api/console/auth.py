"""Sign-in: operator accounts with Argon2id hashes (argon2-cffi), a signed session cookie
(HttpOnly, Secure, SameSite=Strict, path /console), a CSRF token on every POST, and a limit on
failed attempts per name and per address, kept in the ledger so it holds across workers and
Lambda containers."""

from __future__ import annotations

import hmac
import secrets
import time

from flask import abort, flash, g, redirect, request, session, url_for

from api.console import bp
from api.console.pages import render_page
from api.services import services
from api.store_console import AuditEntry

WINDOW_SECONDS = 15 * 60
MAX_FAILURES_PER_NAME = 5
MAX_FAILURES_PER_ADDRESS = 20
OPEN_ENDPOINTS = ("console.sign_in", "console.static")


def hasher():
    from argon2 import PasswordHasher

    return PasswordHasher()  # Argon2id with the library's current recommended parameters


def hash_password(password: str) -> str:
    return hasher().hash(password)


# Verified when the name is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH: list[str] = []


def stored_hash(name: str) -> str | None:
    """From CONSOLE_OPERATORS (a setting, e.g. on Lambda), else from the ledger."""
    for known, password_hash in services().settings.console_operators:
        if hmac.compare_digest(known, name):
            return password_hash
    return services().store.operator_hash(name)


def password_matches(name: str, password: str) -> bool:
    from argon2.exceptions import InvalidHashError, VerificationError

    password_hash = stored_hash(name)
    if not _DUMMY_HASH:
        _DUMMY_HASH.append(hash_password(secrets.token_hex(16)))
    try:
        hasher().verify(password_hash or _DUMMY_HASH[0], password)
    except (VerificationError, InvalidHashError):
        return False
    return password_hash is not None


def operator_exists(name: str) -> bool:
    return stored_hash(name) is not None


# --- rate limit ------------------------------------------------------------------------------
def limit_keys(name: str) -> list[tuple[str, int]]:
    return [(f"name:{name.lower()}", MAX_FAILURES_PER_NAME),
            (f"addr:{request.remote_addr or '-'}", MAX_FAILURES_PER_ADDRESS)]


def too_many_failures(name: str, window: int) -> bool:
    store = services().store
    return any(store.failures(key, window) >= limit for key, limit in limit_keys(name))


def count_failure(name: str, window: int) -> None:
    expires = (window + 2) * WINDOW_SECONDS
    for key, _ in limit_keys(name):
        services().store.count_failure(key, window, expires)


# --- CSRF ------------------------------------------------------------------------------------
def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    return session["csrf"]


@bp.app_template_global("csrf_field")
def csrf_field():
    from markupsafe import Markup, escape

    return Markup(f'<input type="hidden" name="csrf_token" value="{escape(csrf_token())}">')


def check_csrf() -> None:
    sent = request.form.get("csrf_token", "")
    expected = session.get("csrf", "")
    if not sent or not expected or not hmac.compare_digest(sent, expected):
        abort(400, "The form's security token is missing or out of date: reload the page and"
                   " try again.")


# --- every console request -------------------------------------------------------------------
@bp.before_request
def require_operator():
    if request.method == "POST":
        check_csrf()
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    name = session.get("operator")
    if not name or not operator_exists(name):
        session.pop("operator", None)
        if request.path.endswith((".json", ".csv")):
            abort(401, "sign in first")
        return redirect(url_for("console.sign_in", next=request.full_path.rstrip("?")))
    g.operator = name
    return None


def audit(action: str, subject: str, reason: str = "", result: str = "") -> None:
    services().store.add_audit(
        AuditEntry(time.time(), g.get("operator") or "-", action, subject, reason, result)
    )


def safe_next(target: str | None) -> str:
    """Only a path inside the console: never an open redirect."""
    if target and target.startswith("/console") and "//" not in target and "\\" not in target:
        return target
    return url_for("console.fleet")


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in():
    if request.method == "GET":
        return render_page("console/sign_in.html", next=request.args.get("next", ""))
    name = request.form.get("name", "").strip()
    password = request.form.get("password", "")
    window = int(time.time() // WINDOW_SECONDS)
    error = None
    status = 200
    if not name or not password:
        error, status = "Enter your name and password.", 400
    elif too_many_failures(name, window):
        error, status = "Too many failed sign-ins. Wait 15 minutes and try again.", 429
    elif not password_matches(name, password):
        count_failure(name, window)
        error, status = "Wrong name or password.", 401
    if error is not None:
        page = render_page("console/sign_in.html", error=error, name=name,
                           next=request.form.get("next", ""))
        return page, status
    session.clear()  # a fresh session (and CSRF token) for the signed-in operator
    session.permanent = True
    session["operator"] = name
    csrf_token()
    g.operator = name
    audit("sign_in", name)
    return redirect(safe_next(request.form.get("next")))


@bp.post("/sign-out")
def sign_out():
    audit("sign_out", g.operator)
    session.clear()
    flash("Signed out.")
    return redirect(url_for("console.sign_in"))
