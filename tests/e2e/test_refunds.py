"""Pay and play, or get your money back by itself — through the real processes: the API under
gunicorn, `arcade listen` sweeping, Mosquitto expiring what waited too long, a host cabinet
running the unchanged firmware, refunds sent to the recording Stripe stand-in."""

from __future__ import annotations

import pytest

from api.store import State
from tests.e2e.conftest import (
    assert_credited,
    ledger_command,
    refund_settings,
    wait_until,
    webhook,
)

pytestmark = pytest.mark.slow

DEADLINE, GRACE = 4, 1


def test_an_offline_cabinet_is_refunded_and_pulses_nothing_when_it_returns(
    make_site, stripe_server
):
    site = make_site(**refund_settings(stripe_server, DEADLINE, GRACE))
    cabinet = site.start_cabinets(["cab-a"])[0]
    site.start_listener()
    api = site.start_api()
    assert cabinet.stop() == 0  # offline; its persistent session queues what comes for it
    from tests.api.conftest import checkout_session

    session = checkout_session(machine_id="cab-a", credits=3, amount=300)
    answer = api.post(*webhook(session))
    assert (answer.status_code, answer.json()["result"]) == (200, "published"), answer.text
    refunded = wait_until(
        lambda: (p := site.store().get(session["id"])) and p.state == State.REFUNDED and p,
        DEADLINE + GRACE + 15,
        "the refund",
    )
    [call] = stripe_server.calls("POST", "/v1/refunds")
    assert call["headers"]["Idempotency-Key"] == f"arcade-refund-{session['id']}"
    assert (call["form"]["payment_intent"], call["form"]["amount"]) == (
        session["payment_intent"],
        "300",
    )
    assert refunded.parts[0].refund_id.startswith("re_")
    site.refunded["cab-a"] = {session["id"]}
    row = next(line for line in ledger_command(site).splitlines() if session["id"] in line)
    assert " refunded " in row and "3.00 USD" in row

    # Back online much later: the broker dropped the expired coinpulse, and a new payment is
    # the first (and only) thing it pulses.
    before = len(cabinet.read())
    cabinet.start()
    cabinet.wait_count("connected", 2, timeout=30)
    later = site.pay("cab-a", credits=1)
    assert_credited(site)  # every pulse since is for `later`; the refunded one never
    events = cabinet.events[before:]
    assert session["id"] not in {event.get("id") for event in events}
    assert site.store().get(session["id"]).state == State.REFUNDED
    assert site.store().get(later["id"]).state == State.DONE
    assert len(stripe_server.calls("POST", "/v1/refunds")) == 1
