"""Payments through the real processes: one payment, concurrent duplicates of one event, and a
shuffled crowd of 200 payments with duplicates across 20 cabinets."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import TESTER_PASSWORD, TESTER_USER, Subscriber
from tests.e2e.conftest import assert_credited, ledger_command, webhook

pytestmark = pytest.mark.slow


def test_one_payment_pulses_the_right_cabinet_only(make_site):
    site = make_site()
    site.start_cabinets(["cab-a", "cab-b"])
    site.start_listener()
    site.start_api()
    bystander = Subscriber(site.broker, "arcade/machine/cab-b/coinpulse", TESTER_USER,
                           TESTER_PASSWORD)
    try:
        session = site.pay("cab-a", credits=2)
        # The 200 came after the broker's PUBACK: had anything been sent to cab-b, it would
        # arrive before the sentinel.
        assert bystander.nothing_more() == []
    finally:
        bystander.close()
    assert_credited(site)
    assert site.cabinets["cab-a"].of("ack")[0]["id"] == session["id"]
    assert site.cabinets["cab-b"].of("credit") == []
    shown = ledger_command(site, "--machine", "cab-a")
    row = next(line for line in shown.splitlines() if session["id"] in line)
    assert "cab-a" in row and " done " in row
    assert "(no payments)" in ledger_command(site, "--machine", "cab-b")
    assert session["id"] not in ledger_command(site, "--undelivered")


def test_same_event_five_times_at_once_and_async_success_credit_once(make_site):
    site = make_site()
    site.start_cabinets(["cab-a"])
    site.start_listener()
    api = site.start_api(threads=8)
    session = site.session("cab-a", credits=3)
    completed = webhook(session)
    succeeded = webhook(session, "checkout.session.async_payment_succeeded")
    deliveries = [completed] * 5 + [succeeded]
    with ThreadPoolExecutor(len(deliveries)) as pool:
        answers = list(pool.map(lambda d: api.post(*d), deliveries))
    results = [(a.status_code, a.json()["result"]) for a in answers]
    assert results.count((200, "published")) == 1, results
    # The others found the payment published, or still being published (409: Stripe retries).
    assert set(results) <= {(200, "published"), (200, "duplicate"), (409, "busy")}, results
    for delivery, (status, _) in zip(deliveries, results, strict=True):
        if status == 409:  # Stripe's retry, after every first delivery has been answered
            retry = api.post(*delivery)
            assert (retry.status_code, retry.json()["result"]) == (200, "duplicate")
    assert_credited(site)


def test_200_shuffled_payments_with_duplicates_across_20_cabinets(make_site):
    site = make_site()
    machines = [f"cab{i:02d}" for i in range(20)]
    site.start_cabinets(machines)
    site.start_listener()
    api = site.start_api(workers=2, threads=4)
    rng = random.Random(5)
    sessions = [site.session(rng.choice(machines), rng.randint(1, 3)) for _ in range(200)]
    deliveries = [webhook(s) for s in sessions]
    deliveries += [webhook(s) for s in rng.sample(sessions, 60)]  # 30% delivered twice
    rng.shuffle(deliveries)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda d: api.post(*d), deliveries))
    results = [(a.status_code, a.json()["result"]) for a in answers]
    assert results.count((200, "published")) == 200
    assert set(results) <= {(200, "published"), (200, "duplicate"), (409, "busy")}
    busy = [d for d, r in zip(deliveries, results, strict=True) if r[0] == 409]
    for delivery in busy:  # Stripe retries a 409 later: by now the first worker is done
        retry = api.post(*delivery)
        assert (retry.status_code, retry.json()["result"]) == (200, "duplicate")
    assert_credited(site)
