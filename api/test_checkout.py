"""Test checkout mode: a local page stands in for Stripe Checkout when there is no Stripe account.

Only with TEST_CHECKOUT=true, which the settings refuse beside a live Stripe key. "Pay (test)" makes
the API receive a signed `checkout.session.completed` through the normal webhook route, so the
ledger, exactly-once and MQTT path are the real ones.
"""

from __future__ import annotations

import re
import uuid

from flask import Blueprint, current_app, redirect, render_template_string, request, url_for

from api.errors import error_response
from api.logs import note
from api.machines import is_valid_machine_id
from api.services import services
from api.stripe_events import checkout_session, completed_event, signed_delivery

bp = Blueprint("test_checkout", __name__)

# The page carries its own session id, so a double click or a reload pays once.
SESSION_ID = re.compile(r"^cs_test_local_[0-9a-f]{32}$")

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
 <form method="post">
  <input type="hidden" name="session_id" value="{{ session_id }}">
  <button id="pay" type="submit">Pay (test)</button>
 </form>
</div>
<p><small>Arcade STEM test checkout: this page exists only while TEST_CHECKOUT=true.</small></p>
</body></html>"""


def checkout_url(machine_id: str) -> str:
    base = services().settings.public_url or request.host_url.rstrip("/")
    return f"{base}/test-checkout/{machine_id}"


def purchase() -> tuple[int, int]:
    """(credits, amount in cents) one test purchase buys."""
    settings = services().settings
    credits = settings.credits_per_purchase or 1
    return credits, credits * settings.cents_per_credit


def render(machine_id: str, result: str = "", ok: bool = True, status: int = 200):
    credits, amount = purchase()
    page = render_template_string(
        PAGE,
        machine_id=machine_id,
        credits=credits,
        amount=amount,
        result=result,
        ok=ok,
        session_id=f"cs_test_local_{uuid.uuid4().hex}",
    )
    return page, status, {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"}


def checked_machine(machine_id: str) -> str | None:
    valid = is_valid_machine_id(machine_id) and services().settings.machine_allowed(machine_id)
    return machine_id if valid else None


@bp.get("/test-checkout/<machine_id>")
def page(machine_id: str):
    if checked_machine(machine_id) is None:
        return error_response(404, "unknown machine_id")
    return render(machine_id)


@bp.post("/test-checkout/<machine_id>")
def pay(machine_id: str):
    if checked_machine(machine_id) is None:
        return error_response(404, "unknown machine_id")
    session_id = request.form.get("session_id", "")
    if not SESSION_ID.fullmatch(session_id):
        return error_response(400, "session_id missing or malformed")
    credits, amount = purchase()
    event = completed_event(checkout_session(machine_id, amount, credits, session_id))
    body, headers = signed_delivery(event, services().settings.stripe_webhook_secrets[0])
    # Through the real webhook route, signature check included.
    answer = current_app.test_client().post("/webhook", data=body, headers=headers)
    note(machine=machine_id, session=session_id, result="test_checkout")
    if answer.status_code == 200:
        # Where a real Payment Link sends the player: the receipt, following the credit live
        # (delivered, or refunded if the cabinet cannot be reached).
        return redirect(url_for("receipt.page", session_id=session_id), 303)
    error = (answer.json or {}).get("error", "unknown error")
    return render(machine_id, f"Not credited: {error}", ok=False, status=answer.status_code)
