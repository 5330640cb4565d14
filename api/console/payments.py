"""Payments: search (session id, payment intent, cabinet, state, dates) and one payment's page
with its timeline, its parts and its Stripe dashboard link."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from flask import abort, redirect, request, url_for

from api.console import bp
from api.console.pages import render_page, zone
from api.machines import is_valid_machine_id
from api.services import services
from api.store import Payment, State
from api.store_console import PaymentQuery, is_comp, start_of

STATES = [str(state) for state in State]
SEARCH_LIMIT = 200


@dataclass
class Step:
    at: float | None
    what: str
    detail: str = ""


def day_bound(text: str, end: bool) -> float | None:
    """A local date from the form as epoch seconds (its start, or the next day's start)."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        return None
    return start_of(day + timedelta(days=1) if end else day, zone())


def query_from(args) -> tuple[PaymentQuery, str | None]:
    machine = args.get("machine", "").strip() or None
    state = args.get("state", "").strip() or None
    error = None
    if machine and not is_valid_machine_id(machine):
        error, machine = "A cabinet id has only letters, digits, '_' and '-'.", None
    if state and state not in STATES:
        error, state = f"Unknown state {state!r}.", None
    start = day_bound(args.get("from", ""), end=False)
    end = day_bound(args.get("to", ""), end=True)
    return PaymentQuery(machine, state, start, end, SEARCH_LIMIT), error


def find_exact(text: str) -> Payment | None:
    store = services().store
    if text.startswith("pi_"):
        return store.find_by_payment_intent(text)
    return store.get(text.split(":", 1)[0])


@bp.get("/payments")
def payments():
    text = request.args.get("q", "").strip()
    if text:
        found = find_exact(text)
        if found is not None:
            return redirect(url_for("console.payment", session_id=found.session_id))
    query, error = query_from(request.args)
    if text and error is None:
        error = f"No payment has the id {text!r}."
    rows = services().store.search_payments(query)
    return render_page("console/payments.html", rows=rows, states=STATES, args=request.args,
                       error=error, limit=SEARCH_LIMIT)


def parts_of(payment: Payment) -> list[dict]:
    """The coinpulses of a purchase as the ledger planned them, each with its own state."""
    return [{"id": part.id, "credits": part.credits, "state": str(part.state),
             "reason": part.reason, "amount": part.amount} for part in payment.parts]


def timeline_of(payment: Payment) -> list[Step]:
    """The payment's events (paid, published with the broker's reason code, received, done,
    refunded, an operator's action…), oldest first."""
    steps = [Step(event.at, event.kind.replace("_", " "),
                  " ".join(x for x in (event.part, event.detail) if x))
             for event in payment.events]
    return sorted(steps, key=lambda step: step.at or 0)


def payment_or_404(session_id: str) -> Payment:
    found = services().store.get(session_id)
    if found is None:
        abort(404, f"No payment {session_id}.")
    return found


@bp.get("/payments/<session_id>")
def payment(session_id: str):
    found = payment_or_404(session_id)
    return render_page("console/payment.html", payment=found, steps=timeline_of(found),
                       parts=parts_of(found), comp=is_comp(found.session_id))
