"""GET /receipt/<session_id>: the page a player lands on after paying (Payment Links redirect
here; so does the test checkout). It follows this one payment live — paid, on its way, on the
cabinet ✓, or refunded with the amount — and says nothing about any other payment.

Server-rendered (templates/receipt.html); a few lines of JS poll GET /receipt/<id>/status and
update the page; without JS the page refreshes itself until the outcome is final.
"""

from __future__ import annotations

import math
import re
import secrets
import time
from dataclasses import asdict, dataclass, field

from flask import Blueprint, jsonify, make_response, render_template

from api.errors import error_response
from api.ledger import DELIVERED, PartState, Payment, State, money
from api.services import services

bp = Blueprint("receipt", __name__)

# Checkout Session ids: cs_test_… / cs_live_… (letters, digits, underscores).
SESSION_ID = re.compile(r"^cs_(test|live)_[A-Za-z0-9_]{1,200}$")
POLL_EVERY_MS = 2000


@dataclass
class Step:
    label: str
    state: str  # "done", "now", "todo" or "failed"


@dataclass
class Receipt:
    """What the player reads, for the page and for the page's polling."""

    headline: str
    detail: str = ""
    tone: str = "wait"  # wait / ok / refund / bad: the page's colour
    final: bool = False  # nothing will change any more: stop polling
    steps: list[Step] = field(default_factory=list)
    machine: str = ""
    credits: int = 0
    amount: str = ""


def steps(reached: int, failed_at: int | None = None) -> list[Step]:
    """Paid → on its way → on the cabinet, up to `reached` (0-based) done."""
    labels = ("Paid", "On its way", "On the cabinet")
    shown = []
    for index, label in enumerate(labels):
        if failed_at is not None and index == failed_at:
            state = "failed"
        elif index < reached or (index == reached == len(labels) - 1):
            state = "done"
        else:
            state = "now" if index == reached else "todo"
        shown.append(Step(label, state))
    return shown


def receipt_of(payment: Payment | None, now: float) -> Receipt:
    if payment is None:
        return Receipt(
            "Waiting for your payment to be confirmed…",
            "This takes a few seconds. Keep this page open.",
            steps=steps(0),
        )
    facts = {
        "machine": payment.machine_id,
        "credits": payment.credits,
        "amount": money(payment.amount, payment.currency),
    }
    credits = f"{payment.credits} credit{'s' if payment.credits != 1 else ''}"
    where = payment.machine_id
    state = payment.state
    if state == State.PENDING:
        return Receipt(
            "Your payment is being processed",
            "Your bank has not confirmed it yet; your credits follow as soon as it does.",
            steps=steps(0),
            **facts,
        )
    if state == State.FAILED:
        return Receipt("The payment did not go through", "Nothing was charged.", "bad", True,
                       steps(0, failed_at=0), **facts)
    if state == State.DISPUTED:
        return Receipt("This payment is disputed", "The arcade will be in touch.", "bad", True,
                       **facts)
    if state == State.DONE:
        return Receipt(f"✓ {credits} on {where}", "Have fun!", "ok", True, steps(2), **facts)
    if state == State.RECEIVED:
        return Receipt(f"{credits} reached {where}", "They are being added now.", "ok",
                       steps=steps(2), **facts)
    if state in (State.PAID, State.PUBLISHED):
        return Receipt(f"Paid — sending {credits} to {where}…", "Usually a second or two.",
                       steps=steps(1), **facts)
    refunded = max(payment.amount_refunded, payment.refunded_by_us)
    if state == State.REFUNDED_BUT_DELIVERED:
        return Receipt(
            f"✓ {credits} on {where} — and refunded",
            f"They arrived late, after we had refunded {money(refunded, payment.currency)}."
            " Enjoy the game on us.",
            "ok",
            True,
            steps(2),
            **facts,
        )
    if state == State.NOT_CREDITED:
        charged = bool(payment.amount)
        return Receipt(
            "This payment buys no credits here",
            refund_promise(payment, now) if charged else "Nothing was charged.",
            "refund" if charged else "bad",
            not charged,
            steps(0, failed_at=1),
            **facts,
        )
    if state == State.REFUNDED and not refunded:
        return Receipt("Nothing was charged", "No credits were sent.", "bad", True,
                       steps(1, failed_at=1), **facts)
    if state == State.REFUNDED:
        played = sum(p.credits for p in payment.parts if p.state in DELIVERED)
        detail = "Refunds usually show on your statement within 5–10 days."
        if played:
            detail = f"{played} of {payment.credits} credits were played. " + detail
        return Receipt(
            f"Refunded: {money(refunded, payment.currency)}",
            detail,
            "refund",
            True,
            steps(1, failed_at=1 if not played else None),
            **facts,
        )
    # undeliverable or expired: the refund is on its way (or reported to the arcade)
    return Receipt(
        f"We could not reach {where}",
        refund_promise(payment, now),
        "refund",
        steps=steps(1, failed_at=1),
        **facts,
    )


def refund_promise(payment: Payment, now: float) -> str:
    due = payment.refund_due_at
    if due is None or not services().settings.refund_undelivered_after_s:
        return "The arcade has been told; ask the staff for your credits or your money back."
    waiting = [p for p in payment.parts if p.state != PartState.REFUNDED]
    if not waiting:
        return "Your money is on its way back."
    minutes = max(1, math.ceil((due - now) / 60))
    return (
        f"If it still cannot be reached, your money comes back automatically within about"
        f" {minutes} minute{'s' if minutes != 1 else ''}. Keep this page open to see it."
    )


def found(session_id: str) -> Payment | None:
    return services().store.get(session_id)


def private(response, nonce: str | None = None):
    """Nobody else's business: not cached, not indexed, the id not leaked as a referrer."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Robots-Tag"] = "noindex"
    if nonce:
        response.headers["Content-Security-Policy"] = (
            f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}';"
            " connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'"
        )
    return response


@bp.get("/receipt/<session_id>")
def page(session_id: str):
    if not SESSION_ID.fullmatch(session_id):
        return error_response(404, "no such receipt")
    receipt = receipt_of(found(session_id), time.time())
    nonce = secrets.token_urlsafe(12)
    html = render_template(
        "receipt.html",
        receipt=receipt,
        session_id=session_id,
        nonce=nonce,
        poll_every_ms=POLL_EVERY_MS,
    )
    response = make_response(html)
    response.headers["Content-Type"] = "text/html; charset=utf-8"
    return private(response, nonce)


@bp.get("/receipt/<session_id>/status")
def status(session_id: str):
    if not SESSION_ID.fullmatch(session_id):
        return error_response(404, "no such receipt")
    return private(jsonify(asdict(receipt_of(found(session_id), time.time()))))
