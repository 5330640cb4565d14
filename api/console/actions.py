"""What staff can do, each confirmed on a second page and audited (who, when, why, result):
resend an undelivered credit (the same ids: the cabinet drops a repeat), refund a payment,
put a comp credit on a cabinet (its own `comp_…` ids), retire a cabinet or bring it back."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from flask import abort, flash, g, redirect, request, url_for

from api import bookkeeping, crediting
from api.console import bp
from api.console.auth import audit
from api.console.pages import money, render_page
from api.console.payments import payment_or_404
from api.machines import is_valid_machine_id
from api.publisher import PublishError
from api.services import services
from api.store import Payment, State
from api.store_console import COMP_PREFIX, is_comp

MAX_COMP_CREDITS = 50
RESENDABLE = (State.CLAIMED, State.PUBLISHED, "undeliverable", "paid")
REFUNDABLE_NOT = (State.REFUNDED, State.FAILED, State.PENDING, "refunded_but_delivered")


class ActionRefused(Exception):
    """The action cannot be done; the message says why (shown to the operator)."""


@dataclass
class Action:
    name: str
    title: str  # the confirmation question
    button: str
    subject: str
    back: str  # where to go afterwards


# --- the actions themselves (plain functions over the services) ---------------------------------
def resend(payment: Payment) -> str:
    """Publish the payment's coinpulses again, with the same ids."""
    svc = services()
    if str(payment.state) not in [str(s) for s in RESENDABLE]:
        raise ActionRefused(f"this payment is {payment.state}: it is not waiting for delivery")
    try:
        svc.publisher.publish(crediting.coinpulse_messages(svc, payment))
    except PublishError as error:
        raise ActionRefused(f"the broker did not confirm: {error}") from None
    return f"published again ({payment.credits} credit(s), same id)"


def refund(payment: Payment, reason: str) -> str:
    """Refund the whole payment through Stripe (idempotent per payment), then record it."""
    import stripe

    from api.payments import PaymentsError, stripe_client

    svc = services()
    if is_comp(payment.session_id):
        raise ActionRefused("a comp credit has no money to refund")
    if str(payment.state) in [str(s) for s in REFUNDABLE_NOT]:
        raise ActionRefused(f"this payment is {payment.state}: it cannot be refunded")
    if not payment.payment_intent:
        raise ActionRefused("the payment has no payment intent: refund it in Stripe's dashboard")
    try:
        client = stripe_client(svc.settings)
        client.v1.refunds.create(
            params={"payment_intent": payment.payment_intent,
                    "metadata": {"session_id": payment.session_id, "reason": reason[:200],
                                 "operator": g.operator}},
            options={"idempotency_key": f"arcade-refund-{payment.session_id}"},
        )
    except (stripe.StripeError, PaymentsError) as error:
        message = getattr(error, "user_message", None) or str(error)
        raise ActionRefused(f"Stripe: {message}") from None
    svc.store.mark(payment.session_id, State.REFUNDED, time.time())
    bookkeeping.after_change(svc, payment.session_id)
    return f"refunded {money(payment.amount, payment.currency)}"


def comp(machine_id: str, credits: int) -> tuple[str, str]:
    """A free credit: a ledger record of its own id space, delivered like any payment."""
    svc = services()
    session_id = f"{COMP_PREFIX}{secrets.token_hex(12)}"
    outcome = crediting.credit(svc, Payment(session_id, machine_id, credits))
    if outcome.status != 200:
        raise ActionRefused(f"not delivered ({outcome.result}): {outcome.error}")
    return session_id, f"{credits} comp credit(s) published as {session_id}"


# --- forms: ask, confirm, do, audit, go back ----------------------------------------------------
def reason_or_refuse() -> str:
    reason = request.form.get("reason", "").strip()
    if not reason:
        raise ActionRefused("say why (the reason is kept in the audit log)")
    if len(reason) > 500:
        raise ActionRefused("keep the reason under 500 characters")
    return reason


def comp_credits() -> int:
    raw = request.form.get("credits", "").strip()
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_COMP_CREDITS:
        raise ActionRefused(f"credits must be a whole number from 1 to {MAX_COMP_CREDITS}")
    return int(raw)


def describe(name: str) -> Action:
    form = request.form
    subject = form.get("subject", "")
    if name in ("resend", "refund"):
        payment = payment_or_404(subject)
        back = url_for("console.payment", session_id=subject)
        if name == "resend":
            return Action(name, f"Publish the {payment.credits} credit(s) of {subject} to "
                          f"{payment.machine_id} again?", "Yes, resend", subject, back)
        return Action(name, f"Refund {money(payment.amount, payment.currency)} of {subject} "
                      "to the player?", "Yes, refund", subject, back)
    if not is_valid_machine_id(subject):
        abort(404, "No such cabinet.")
    back = url_for("console.cabinet", machine_id=subject)
    if name == "comp":
        return Action(name, f"Put {comp_credits()} free credit(s) on {subject}?",
                      "Yes, put the credits on", subject, back)
    if name == "retire":
        return Action(name, f"Retire {subject}? It leaves the fleet list and its alerts stop.",
                      "Yes, retire", subject, back)
    if name == "unretire":
        return Action(name, f"Bring {subject} back into the fleet?", "Yes, bring back", subject,
                      back)
    abort(404, "No such action.")


def perform(action: Action, reason: str) -> str:
    svc = services()
    if action.name == "resend":
        return resend(payment_or_404(action.subject))
    if action.name == "refund":
        return refund(payment_or_404(action.subject), reason)
    if action.name == "comp":
        session_id, result = comp(action.subject, comp_credits())
        action.back = url_for("console.payment", session_id=session_id)
        return result
    svc.store.set_retired(action.subject, action.name == "retire", time.time())
    return "retired" if action.name == "retire" else "back in the fleet"


@bp.post("/actions/<name>")
def act(name: str):
    action = describe(name)
    try:
        reason = reason_or_refuse()
        if request.form.get("confirmed") != "yes":
            return render_page("console/confirm.html", action=action, reason=reason,
                               credits=request.form.get("credits", ""))
        result = perform(action, reason)
    except ActionRefused as error:
        if request.form.get("confirmed") == "yes":
            audit(action.name, action.subject, request.form.get("reason", ""),
                  f"refused: {error}")
        flash(f"Not done: {error}.", "error")
        return redirect(action.back)
    audit(action.name, action.subject, reason, result)
    flash(f"Done: {result}.", "ok")
    return redirect(action.back)
