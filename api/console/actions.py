"""What staff can do, each confirmed on a second page and audited (who, when, why, result):
resend an undelivered credit (the same ids: the cabinet drops a repeat), refund a payment,
put a comp credit on a cabinet (its own `comp_…` ids), retire a cabinet or bring it back."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from flask import abort, flash, g, redirect, request, url_for

from api import crediting, ledger
from api.console import bp
from api.console.auth import audit
from api.console.pages import money, render_page
from api.console.payments import payment_or_404
from api.ledger import REFUNDABLE
from api.machines import is_valid_machine_id
from api.services import services
from api.store import Payment
from api.store_console import COMP_PREFIX, is_comp

MAX_COMP_CREDITS = 50


class ActionRefused(Exception):
    """The action cannot be done; the message says why (shown to the operator)."""


@dataclass
class Action:
    name: str
    title: str  # the confirmation question
    button: str
    subject: str
    back: str  # where to go afterwards


# --- the actions themselves: the same calls as `arcade ledger resend / refund` -----------------
def resend(payment: Payment) -> str:
    """Publish again the parts the cabinet has not confirmed, with the same ids (a cabinet that
    has one already drops the repeat), while their deadline allows."""
    svc = services()
    parts = [p for p in payment.parts if ledger.publishable(p, time.time(), resend=True)]
    if not parts:
        raise ActionRefused(f"nothing to resend: the payment is {payment.state} (every part is"
                            " confirmed, refunded or past its deadline)")
    outcome = crediting.credit(svc, payment, resend=True)
    svc.store.noted(payment.session_id, "operator_resend", f"{g.operator}: {outcome.result}",
                    time.time())
    if outcome.status != 200:
        raise ActionRefused(f"not published: {outcome.error}")
    if outcome.result != "published":
        raise ActionRefused(f"not published again ({outcome.result})")
    listed = ", ".join(f"{p.id} ({p.credits} credits)" for p in parts)
    return f"published again ({outcome.result}): {listed}"


def refundable_parts(payment: Payment) -> list:
    return [] if payment.disputed else [p for p in payment.parts if p.state in REFUNDABLE]


def refund(payment: Payment, reason: str) -> str:
    """Refund now, through Stripe, the parts the cabinet has not confirmed (once per part:
    the ledger's refund claim and Stripe's idempotency key)."""
    from api import refunds

    svc = services()
    parts = refundable_parts(payment)
    if is_comp(payment.session_id):
        raise ActionRefused("a comp credit has no money to refund")
    if not parts:
        raise ActionRefused(f"nothing to refund: the payment is {payment.state} (refund"
                            " delivered credits in Stripe's dashboard)")
    results = [refunds.refund_part(svc, payment.session_id, part.id, force=True)
               for part in parts]
    svc.store.noted(payment.session_id, "operator_refund",
                    f"{g.operator}: {', '.join(results)} ({reason[:100]})", time.time())
    if "failed" in results:
        raise ActionRefused("Stripe refused: the timeline has its answer")
    refunded = services().store.get(payment.session_id)
    return f"refunded {money(refunded.refunded_by_us, payment.currency)}"


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
        from api.refunds import refund_amount

        total = sum(refund_amount(payment, part) for part in refundable_parts(payment))
        return Action(name, f"Refund {money(total, payment.currency)} of {subject} (its"
                      f" undelivered part(s)) to the player?", "Yes, refund", subject, back)
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
