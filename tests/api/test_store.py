"""The ledger contract, run on both stores: SQLite files and DynamoDB (moto server, real HTTP)."""

from __future__ import annotations

import threading

import pytest

from api.store import Claim, Payment, State

LEASE = 60.0


def payment(session_id="cs_test_1", machine_id="machine_123", credits=2, intent="pi_1"):
    return Payment(
        session_id=session_id,
        machine_id=machine_id,
        credits=credits,
        amount=credits * 100,
        currency="usd",
        payment_intent=intent,
    )


def test_first_claim_wins_and_records_the_payment(store):
    assert store.claim(payment(), "token-a", 1000.0, LEASE) == Claim.CLAIMED
    stored = store.get("cs_test_1")
    assert (stored.machine_id, stored.credits, stored.amount, stored.currency) == (
        "machine_123",
        2,
        200,
        "usd",
    )
    assert stored.state == State.CLAIMED
    assert stored.created_at == 1000.0


def test_claim_in_progress_is_busy_until_the_lease_expires(store):
    assert store.claim(payment(), "token-a", 1000.0, LEASE) == Claim.CLAIMED
    assert store.claim(payment(), "token-b", 1000.0 + LEASE - 1, LEASE) == Claim.BUSY
    # A crashed worker's claim expires: the next delivery may take over.
    assert store.claim(payment(), "token-c", 1000.0 + LEASE + 1, LEASE) == Claim.CLAIMED
    # The crashed worker's token no longer counts.
    assert store.mark_published("cs_test_1", "token-a", 1100.0) is False
    assert store.mark_published("cs_test_1", "token-c", 1100.0) is True


def test_published_session_is_a_duplicate_forever(store):
    store.claim(payment(), "token-a", 1000.0, LEASE)
    assert store.mark_published("cs_test_1", "token-a", 1001.0)
    stored = store.get("cs_test_1")
    assert stored.state == State.PUBLISHED and stored.published_at == 1001.0
    assert store.claim(payment(), "token-b", 1002.0, LEASE) == Claim.DUPLICATE
    assert store.claim(payment(), "token-c", 1000.0 + 10 * LEASE, LEASE) == Claim.DUPLICATE
    # Refunded after it was credited: still never credited again.
    assert store.mark("cs_test_1", State.REFUNDED, 1003.0)
    assert store.claim(payment(), "token-d", 1004.0, LEASE) == Claim.DUPLICATE
    assert store.get("cs_test_1").state == State.REFUNDED


def test_release_lets_the_retry_claim_at_once(store):
    store.claim(payment(), "token-a", 1000.0, LEASE)
    store.release("cs_test_1", "token-a", 1001.0)
    assert store.get("cs_test_1").state == State.PENDING
    assert store.claim(payment(), "token-b", 1002.0, LEASE) == Claim.CLAIMED


def test_release_with_a_stale_token_changes_nothing(store):
    store.claim(payment(), "token-a", 1000.0, LEASE)
    store.release("cs_test_1", "someone-else", 1001.0)
    assert store.claim(payment(), "token-b", 1002.0, LEASE) == Claim.BUSY


def test_pending_payment_is_claimed_when_paid(store):
    store.record(payment(), 1000.0)
    assert store.get("cs_test_1").state == State.PENDING
    assert store.claim(payment(), "token-a", 1001.0, LEASE) == Claim.CLAIMED


def test_record_never_downgrades_an_existing_payment(store):
    store.claim(payment(), "token-a", 1000.0, LEASE)
    store.mark_published("cs_test_1", "token-a", 1001.0)
    store.record(payment(), 1002.0)
    assert store.get("cs_test_1").state == State.PUBLISHED


@pytest.mark.parametrize("state", [State.REFUNDED, State.DISPUTED, State.FAILED])
def test_refunded_disputed_or_failed_before_credit_is_never_credited(store, state):
    store.record(payment(), 1000.0)
    assert store.mark("cs_test_1", state, 1001.0)
    assert store.claim(payment(), "token-a", 1002.0, LEASE) == Claim.REFUSED
    assert store.get("cs_test_1").state == state


def test_failed_cannot_undo_a_published_credit(store):
    store.claim(payment(), "token-a", 1000.0, LEASE)
    store.mark_published("cs_test_1", "token-a", 1001.0)
    assert store.mark("cs_test_1", State.FAILED, 1002.0) is False
    assert store.get("cs_test_1").state == State.PUBLISHED


def test_ack_before_or_after_publish_ends_acked(store):
    store.claim(payment("cs_a"), "t", 1000.0, LEASE)
    assert store.mark("cs_a", State.ACKED, 1001.0)  # the cabinet was faster than our PUBACK
    store.mark_published("cs_a", "t", 1002.0)
    store.claim(payment("cs_b"), "t", 1000.0, LEASE)
    store.mark_published("cs_b", "t", 1001.0)
    store.mark("cs_b", State.ACKED, 1002.0)
    for session_id in ("cs_a", "cs_b"):
        stored = store.get(session_id)
        assert stored.state == State.ACKED and stored.acked_at is not None


def test_mark_unknown_session_says_so(store):
    assert store.mark("cs_unknown", State.REFUNDED, 1000.0) is False


def test_find_by_payment_intent(store):
    store.claim(payment("cs_a", intent="pi_a"), "t", 1000.0, LEASE)
    store.claim(payment("cs_b", intent="pi_b"), "t", 1000.0, LEASE)
    assert store.find_by_payment_intent("pi_b").session_id == "cs_b"
    assert store.find_by_payment_intent("pi_nope") is None


def test_payments_listed_newest_first_and_by_machine(store):
    store.record(payment("cs_1", machine_id="cab-a", intent="pi_x1"), 1000.0)
    store.record(payment("cs_2", machine_id="cab-b", intent="pi_x2"), 1001.0)
    store.record(payment("cs_3", machine_id="cab-a", intent="pi_x3"), 1002.0)
    assert [p.session_id for p in store.payments()] == ["cs_3", "cs_2", "cs_1"]
    assert [p.session_id for p in store.payments(machine_id="cab-a")] == ["cs_3", "cs_1"]


def test_links_first_writer_wins(store):
    from api.store import Link

    assert store.link("machine_123", "price_1") is None
    assert store.save_link("machine_123", "price_1", Link("https://a", "plink_a", 1000.0)).url == (
        "https://a")
    assert store.save_link("machine_123", "price_1", Link("https://b", "plink_b", 1001.0)).url == (
        "https://a")
    assert store.link("machine_123", "price_1") == Link("https://a", "plink_a", 1000.0)
    assert store.link("machine_123", "price_2") is None


def test_a_link_is_replaced_only_over_the_one_it_replaces(store):
    from api.store import Link

    store.save_link("machine_123", "price_1", Link("https://a", "plink_a", 1000.0))
    stale = store.save_link("machine_123", "price_1", Link("https://c", "plink_c", 1002.0),
                            replacing="https://b")  # someone else's view: not applied
    assert stale.url == "https://a"
    new = store.save_link("machine_123", "price_1", Link("https://b", "plink_b", 1003.0),
                          replacing="https://a")
    assert new == Link("https://b", "plink_b", 1003.0)
    checked = store.save_link("machine_123", "price_1", Link("https://b", "plink_b", 1009.0),
                              replacing="https://b")
    assert checked.checked_at == 1009.0


def test_ping(store):
    store.ping()


def test_concurrent_claims_have_exactly_one_winner(store_factory):
    """Eight workers, each with its own connection, race for one session."""
    results = []
    barrier = threading.Barrier(8)

    def worker(index):
        own = store_factory()
        barrier.wait()
        results.append(own.claim(payment(), f"token-{index}", 1000.0, LEASE))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(results) == sorted([Claim.CLAIMED] + [Claim.BUSY] * 7)


def test_cabinets_keep_their_latest_status(store):
    from api.store import Cabinet

    assert store.cabinets() == []
    store.cabinet_seen(Cabinet("cab-b", "online", 1000.0, "1.0.0", 0))
    store.cabinet_seen(Cabinet("cab-a", "online", 1001.0, "1.0.0", 2))
    store.cabinet_seen(Cabinet("cab-b", "offline", 1002.0, "1.0.0", 0))
    assert store.cabinets() == [
        Cabinet("cab-a", "online", 1001.0, "1.0.0", 2),
        Cabinet("cab-b", "offline", 1002.0, "1.0.0", 0),
    ]
