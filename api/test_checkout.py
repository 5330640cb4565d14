"""Test checkout mode: a local page stands in for Stripe Checkout when there is no Stripe account.

It credits for free, so it runs only where that harms no one (checked at start, api/settings.py):
TEST_CHECKOUT=true, no Stripe key at all, links from PUBLIC_URL (never from a request's Host), and
only for clients on this machine or on the network TEST_CHECKOUT_NETWORK names. Each Pay button
carries a token tied to the page that showed it, so another site cannot post the form.
"Pay (test)" makes the API receive a signed `checkout.session.completed` through the normal
webhook route, so the ledger, exactly-once and MQTT path are the real ones.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
import uuid

from flask import Blueprint, current_app, redirect, render_template_string, request, url_for

from api.errors import error_response
from api.logs import note
from api.machines import is_valid_machine_id, same_secret
from api.security import client_in, limit_cabinet, limit_client
from api.services import services
from api.stripe_events import checkout_session, completed_event, signed_delivery

bp = Blueprint("test_checkout", __name__)

# The page carries its own session id, so a double click or a reload pays once.
SESSION_ID = re.compile(r"^cs_test_local_[0-9a-f]{32}$")
# Set by the Pay button's redirect, read once by the page it lands on: a reload then says
# "already paid" instead of "sent" again.
JUST_PAID_COOKIE = "arcade_test_paid"
PAGE_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    # Never inside another site's frame (a hidden Pay button under a decoy), no scripts at all.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>TEST checkout — {{ machine_id }}</title>
<style>
 body{font-family:system-ui,sans-serif;max-width:28rem;margin:1rem auto;padding:0 1rem}
 .test{background:#c00;color:#fff;font-weight:800;text-align:center;padding:.8rem;
       font-size:1.4rem;letter-spacing:.1em;border-radius:.4rem}
 .card{border:2px dashed #c00;border-radius:.4rem;padding:1rem;margin-top:1rem}
 button{width:100%;font-size:1.3rem;padding:1rem;margin-top:1rem;background:#222;color:#fff;
        border:0;border-radius:.4rem}
 .ok{color:#060;font-weight:700} .err{color:#c00;font-weight:700}
</style></head><body>
<div class="test">TEST MODE — NO REAL PAYMENT</div>
<div class="card">
 <p>Cabinet <strong id="machine">{{ machine_id }}</strong></p>
 <p>{{ credits }} credit{{ "s" if credits != 1 else "" }} for
    <strong>{{ "%.2f"|format(amount / 100) }} USD</strong> (test)</p>
 {% if result %}<p id="result" class="{{ 'ok' if ok else 'err' }}">{{ result }}</p>{% endif %}
 <form method="post" action="{{ action }}">
  <input type="hidden" name="session_id" value="{{ session_id }}">
  <input type="hidden" name="token" value="{{ token }}">
  <button id="pay" type="submit">Pay (test)</button>
 </form>
</div>
<p><small>Arcade STEM test checkout: this page exists only while TEST_CHECKOUT=true.</small></p>
</body></html>"""


def checkout_url(machine_id: str) -> str:
    """From PUBLIC_URL only: a request's Host header is the sender's to choose."""
    return f"{services().settings.public_url}/test-checkout/{machine_id}"


def form_token(machine_id: str, session_id: str) -> str:
    """Ties a Pay button to the page that showed it. Derived from the webhook secret, which every
    worker shares (a per-process secret would fail when another gunicorn worker gets the POST)."""
    secret = services().settings.stripe_webhook_secrets[0].encode()
    key = hmac.new(secret, b"arcade test-checkout form", hashlib.sha256).digest()
    return hmac.new(key, f"{machine_id}:{session_id}".encode(), hashlib.sha256).hexdigest()


def purchase() -> tuple[int, int]:
    """(credits, amount in cents) one test purchase buys."""
    settings = services().settings
    credits = settings.credits_per_purchase or 1
    return credits, credits * settings.cents_per_credit


def render(machine_id: str, result: str = "", ok: bool = True, status: int = 200,
           session_id: str | None = None):
    """The page; a failed payment keeps its session id, so "Pay" again retries that payment."""
    credits, amount = purchase()
    session_id = session_id or f"cs_test_local_{uuid.uuid4().hex}"
    page = render_template_string(
        PAGE,
        machine_id=machine_id,
        credits=credits,
        amount=amount,
        result=result,
        ok=ok,
        action=f"/test-checkout/{machine_id}",
        session_id=session_id,
        token=form_token(machine_id, session_id),
    )
    return page, status, PAGE_HEADERS


def checked_machine(machine_id: str) -> str | None:
    valid = is_valid_machine_id(machine_id) and services().settings.machine_allowed(machine_id)
    return machine_id if valid else None


@bp.before_request
def only_where_allowed():
    settings = services().settings
    security = settings.security
    if not client_in(security.test_checkout_networks, security.trusted_proxy_hops):
        note(result="refused")
        return error_response(
            403, "the test checkout is only for this machine (or the network named in "
            "TEST_CHECKOUT_NETWORK)"
        )
    limit_client("test-checkout")
    return None


def receipt(machine_id: str, session_id: str) -> tuple[str, bool]:
    """What the page says about a payment it made: from the ledger, not from the request."""
    stored = services().store.get(session_id) if SESSION_ID.fullmatch(session_id) else None
    if stored is None or stored.machine_id != machine_id:
        return "No such test payment for this cabinet.", False
    if stored.published_at is None:
        return f"Test payment {session_id}: not sent yet ({stored.state}).", False
    sent = time.strftime("%H:%M:%S UTC", time.gmtime(stored.published_at))
    if request.cookies.get(JUST_PAID_COOKIE) == session_id:
        return f"Paid (test): {stored.credits} credit(s) sent to {machine_id}.", True
    return (f"Already paid (test) at {sent}: {stored.credits} credit(s) went to {machine_id}; "
            "nothing was sent again."), True


@bp.get("/test-checkout/<machine_id>")
def page(machine_id: str):
    if checked_machine(machine_id) is None:
        return error_response(404, "unknown machine_id")
    paid = request.args.get("paid", "")
    if not paid:
        return render(machine_id)
    result, ok = receipt(machine_id, paid)
    body, status, headers = render(machine_id, result, ok)
    response = current_app.make_response((body, status, headers))
    response.delete_cookie(JUST_PAID_COOKIE, path=f"/test-checkout/{machine_id}")
    return response


@bp.post("/test-checkout/<machine_id>")
def pay(machine_id: str):
    if checked_machine(machine_id) is None:
        return error_response(404, "unknown machine_id")
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        return error_response(403, "a test payment must come from the test page itself")
    session_id = request.form.get("session_id", "")
    if not SESSION_ID.fullmatch(session_id):
        return error_response(400, "session_id missing or malformed")
    if not same_secret(request.form.get("token", ""), form_token(machine_id, session_id)):
        return error_response(403, "this Pay button is not from a page this server showed")
    limit_cabinet("test-checkout", machine_id)
    credits, amount = purchase()
    event = completed_event(checkout_session(machine_id, amount, credits, session_id))
    body, headers = signed_delivery(event, services().settings.stripe_webhook_secrets[0])
    # Through the real webhook route, signature check included.
    answer = current_app.test_client().post("/webhook", data=body, headers=headers)
    result = (answer.json or {}).get("result", "")
    note(machine=machine_id, session=session_id, result=f"test_checkout_{result or 'error'}")
    if answer.status_code == 200:
        # POST-redirect-GET to where a real Payment Link sends the player: the receipt, which
        # follows the credit live (delivered, or refunded if the cabinet cannot be reached).
        response = redirect(url_for("receipt.page", session_id=session_id), code=303)
        if result == "published":
            response.set_cookie(JUST_PAID_COOKIE, session_id, max_age=60, httponly=True,
                                samesite="Strict", path=f"/test-checkout/{machine_id}")
        return response
    error = (answer.json or {}).get("error", "unknown error")
    return render(machine_id, f"Not credited: {error}", ok=False, status=answer.status_code,
                  session_id=session_id)
