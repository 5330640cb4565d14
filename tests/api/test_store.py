"""The ledger contract, run on both stores: SQLite files and DynamoDB (moto server, real HTTP)."""

from __future__ import annotations

import threading

from api.store import Cabinet, Claim, Heartbeat, PartState, Payment, State, planned

LEASE = 60.0


def payment(session_id="cs_test_1", machine_id="machine_123", credits=2, intent="pi_1", now=1000.0):
    """A paid payment with its plan (20 credits a message, deadline 180 s, grace 60 s)."""
    bare = Payment(session_id, machine_id, credits, credits * 100, "usd", payment_intent=intent)
    return planned(bare, now=now)


def all_published(store, session_id, token, now):
    parts = store.get(session_id).parts
    return store.published(session_id, token, {part.id: 0 for part in parts}, now)


def test_first_claim_wins_and_records_the_payment_with_its_plan(store):
    assert store.claim(payment(), "token-a", 1000.0, LEASE) == Claim.CLAIMED
    stored = store.get("cs_test_1")
    assert (stored.machine_id, stored.credits, stored.amount, stored.currency) == (
        "machine_123",
        2,
        200,
        "usd",
    )
    assert stored.state == State.PAID and stored.created_at == 1000.0
    [part] = stored.parts
    assert (part.id, part.credits, part.amount, part.state) == ("cs_test_1", 2, 200, "paid")
    assert (part.expires_at, part.refund_at) == (1180.0, 1240.0)
    assert [event.kind for event in store.events("cs_test_1")] == ["paid"]


def test_the_plan_is_stored_once(store):
    store.claim(payment(credits=45), "token-a", 1000.0, LEASE)
    store.release("cs_test_1", "token-a", 1001.0)
    # The retry comes with another plan (the limit changed meanwhile): the first one stays.
    other = planned(Payment("cs_test_1", "machine_123", 45, 4500, "usd"), max_per_message=10)
    store.claim(other, "token-b", 1002.0, LEASE)
    parts = store.get("cs_test_1").parts
    assert [(p.id, p.credits) for p in parts] == [
        ("cs_test_1:1", 20),
        ("cs_test_1:2", 20),
        ("cs_test_1:3", 5),
    ]


def test_claim_in_progress_is_busy_until_the_lease_expires(store):
    assert store.claim(payment(), "token-a", 1000.0, LEASE) == Claim.CLAIMED
    assert store.claim(payment(), "token-b", 1000.0 + LEASE - 1, LEASE) == Claim.BUSY
    # A crashed worker's claim expires: the next delivery may take over.
    assert store.claim(payment(), "token-c", 1000.0 + LEASE + 1, LEASE) == Claim.CLAIMED
    # The crashed worker's token no longer holds the lease, but what the broker said counts.
    assert all_published(store, "cs_test_1", "token-a", 1100.0) is False
    assert store.get("cs_test_1").state == State.PUBLISHED


def test_our_own_claim_retried_still_counts(store):
    assert store.claim(payment(), "token-a", 1000.0, LEASE) == Claim.CLAIMED
    assert store.claim(payment(), "token-a", 1000.0, LEASE) == Claim.CLAIMED


def test_published_payment_is_a_duplicate_forever(store):
    store.claim(payment(), "token-a", 1000.0, LEASE)
    assert all_published(store, "cs_test_1", "token-a", 1001.0)
    stored = store.get("cs_test_1")
    assert stored.state == State.PUBLISHED and stored.published_at == 1001.0
    assert store.claim(payment(), "token-b", 1002.0, LEASE) == Claim.DUPLICATE
    assert store.claim(payment(), "token-c", 1000.0 + 10 * LEASE, LEASE) == Claim.DUPLICATE


def test_per_part_results_and_a_retry_of_what_is_left(store):
    store.claim(payment(credits=45), "token-a", 1000.0, LEASE)
    ids = [part.id for part in store.get("cs_test_1").parts]
    store.published("cs_test_1", "token-a", {ids[0]: 0, ids[1]: 0x10, ids[2]: None}, 1001.0)
    stored = store.get("cs_test_1")
    assert [(p.state, p.reason) for p in stored.parts] == [
        (PartState.PUBLISHED, ""),
        (PartState.UNDELIVERABLE, "0x10 No matching subscribers"),
        (PartState.PAID, ""),
    ]
    assert stored.state == State.UNDELIVERABLE
    # The retry may publish the two the broker did not take.
    assert store.claim(payment(credits=45), "token-b", 1002.0, LEASE) == Claim.CLAIMED
    store.published("cs_test_1", "token-b", {ids[1]: 0, ids[2]: 0}, 1003.0)
    assert store.get("cs_test_1").state == State.PUBLISHED


def test_release_keeps_a_paid_payment_paid_and_lets_the_retry_claim_at_once(store):
    store.claim(payment(), "token-a", 1000.0, LEASE)
    store.release("cs_test_1", "token-a", 1001.0)
    assert store.get("cs_test_1").state == State.PAID
    assert store.claim(payment(), "token-b", 1002.0, LEASE) == Claim.CLAIMED


def test_release_with_a_stale_token_changes_nothing(store):
    store.claim(payment(), "token-a", 1000.0, LEASE)
    store.release("cs_test_1", "someone-else", 1001.0)
    assert store.claim(payment(), "token-b", 1002.0, LEASE) == Claim.BUSY


def test_past_the_deadline_nothing_is_published(store):
    store.claim(payment(), "token-a", 1000.0, LEASE)
    store.release("cs_test_1", "token-a", 1001.0)
    assert store.claim(payment(), "token-b", 1180.0, LEASE) == Claim.EXPIRED


def test_pending_payment_is_claimed_when_paid(store):
    bare = Payment("cs_test_1", "machine_123", 2, 200, "usd", payment_intent="pi_1")
    assert store.record(bare, 1000.0)
    assert store.get("cs_test_1").state == State.PENDING
    assert store.claim(payment(), "token-a", 1001.0, LEASE) == Claim.CLAIMED
    assert store.get("cs_test_1").state == State.PAID


def test_record_never_overwrites(store):
    store.claim(payment(), "token-a", 1000.0, LEASE)
    all_published(store, "cs_test_1", "token-a", 1001.0)
    assert store.record(Payment("cs_test_1", "machine_123", 2), 1002.0) is False
    assert store.get("cs_test_1").state == State.PUBLISHED


def test_failed_async_payment_is_never_credited(store):
    store.record(Payment("cs_test_1", "machine_123", 2), 1000.0)
    assert store.mark_failed("cs_test_1", 1001.0)
    assert store.claim(payment(), "token-a", 1002.0, LEASE) == Claim.REFUSED
    assert store.get("cs_test_1").state == State.FAILED


def test_failed_cannot_undo_a_credit(store):
    store.claim(payment(), "token-a", 1000.0, LEASE)
    all_published(store, "cs_test_1", "token-a", 1001.0)
    assert store.mark_failed("cs_test_1", 1002.0) is False
    assert store.get("cs_test_1").state == State.PUBLISHED


def test_a_full_refund_in_stripe_before_the_credit_cancels_it(store):
    store.claim(payment(), "token-a", 1000.0, LEASE)
    store.release("cs_test_1", "token-a", 1001.0)
    store.stripe_refunded("cs_test_1", 200, 1002.0)
    assert store.get("cs_test_1").state == State.REFUNDED
    assert store.claim(payment(), "token-b", 1003.0, LEASE) == Claim.REFUSED


def test_a_partial_refund_changes_no_part(store):
    store.claim(payment(), "token-a", 1000.0, LEASE)
    all_published(store, "cs_test_1", "token-a", 1001.0)
    store.stripe_refunded("cs_test_1", 50, 1002.0)
    stored = store.get("cs_test_1")
    assert (stored.state, stored.amount_refunded) == (State.PUBLISHED, 50)
    store.stripe_refunded("cs_test_1", 20, 1003.0)  # an older event arriving late
    assert store.get("cs_test_1").amount_refunded == 50


def test_a_dispute_stops_publishing(store):
    store.claim(payment(), "token-a", 1000.0, LEASE)
    store.release("cs_test_1", "token-a", 1001.0)
    store.stripe_disputed("cs_test_1", 1002.0)
    assert store.get("cs_test_1").state == State.DISPUTED
    assert store.claim(payment(), "token-b", 1003.0, LEASE) == Claim.REFUSED


def test_intent_notes_merge_and_name_the_session(store):
    """A refund may come before its session is known; once it is, either side finds the other."""
    assert store.note_intent("pi_x", amount_refunded=100).session_id == ""
    store.claim(payment("cs_a", intent="pi_x"), "t", 1000.0, LEASE)
    linked = store.note_intent("pi_x", session_id="cs_a")
    assert (linked.session_id, linked.amount_refunded, linked.disputed) == ("cs_a", 100, False)
    merged = store.note_intent("pi_x", amount_refunded=50, disputed=True)
    assert (merged.session_id, merged.amount_refunded, merged.disputed) == ("cs_a", 100, True)


def test_acks_per_part_in_any_order(store):
    store.claim(payment(credits=45), "t", 1000.0, LEASE)
    ids = [part.id for part in store.get("cs_test_1").parts]
    # The cabinet was faster than our PUBACK for the first part.
    assert store.ack("machine_123", ids[0], "received", "", 1001.0) == "received"
    all_published(store, "cs_test_1", "t", 1002.0)
    stored = store.get("cs_test_1")
    assert [p.state for p in stored.parts] == ["received", "published", "published"]
    for part_id in ids:
        store.ack("machine_123", part_id, "done", "", 1003.0)
    stored = store.get("cs_test_1")
    assert stored.state == State.DONE and stored.done_at == 1003.0


def test_refund_claim_and_refunded(store):
    store.claim(payment(), "t", 1000.0, LEASE)
    all_published(store, "cs_test_1", "t", 1001.0)
    assert store.refund_claim("cs_test_1", "cs_test_1", "sweep-a", 1239.0, LEASE) is False
    assert store.refund_claim("cs_test_1", "cs_test_1", "sweep-a", 1240.0, LEASE) is True
    assert store.refund_claim("cs_test_1", "cs_test_1", "sweep-b", 1241.0, LEASE) is False
    store.refunded("cs_test_1", "cs_test_1", "sweep-a", "re_1", 200, 1242.0)
    stored = store.get("cs_test_1")
    assert stored.state == State.REFUNDED and stored.parts[0].refund_id == "re_1"
    # The cabinet was only late: it pulsed after all.
    store.ack("machine_123", "cs_test_1", "done", "", 1243.0)
    assert store.get("cs_test_1").state == State.REFUNDED_BUT_DELIVERED


def test_due_for_the_sweep(store):
    store.claim(payment("cs_a", intent="pi_a"), "t", 1000.0, LEASE)
    all_published(store, "cs_a", "t", 1001.0)
    store.claim(payment("cs_b", intent="pi_b"), "t", 1000.0, LEASE)
    all_published(store, "cs_b", "t", 1001.0)
    store.ack("machine_123", "cs_b", "done", "", 1002.0)
    store.claim(payment("cs_c", intent="pi_c"), "t", 1000.0, LEASE)
    store.release("cs_c", "t", 1001.0)  # not taken by the broker: tried again soon
    assert [p.session_id for p in store.due(1005.0)] == []
    assert [p.session_id for p in store.due(1011.0)] == ["cs_c"]
    assert sorted(p.session_id for p in store.due(1240.0)) == ["cs_a", "cs_c"]


def test_payments_by_machine_state_and_date_range(store):
    store.record(Payment("cs_1", "cab-a", 1, payment_intent="pi_x1"), 1000.0)
    store.record(Payment("cs_2", "cab-b", 1, payment_intent="pi_x2"), 1001.0)
    store.claim(payment("cs_3", machine_id="cab-a", intent="pi_x3"), "t", 1002.0, LEASE)
    assert [p.session_id for p in store.payments()] == ["cs_3", "cs_2", "cs_1"]
    assert [p.session_id for p in store.payments(machine_id="cab-a")] == ["cs_3", "cs_1"]
    assert [p.session_id for p in store.payments(state=State.PENDING)] == ["cs_2", "cs_1"]
    assert [p.session_id for p in store.payments("cab-a", State.PAID)] == ["cs_3"]
    assert [p.session_id for p in store.payments(since=1001.0)] == ["cs_3", "cs_2"]
    assert [p.session_id for p in store.payments(since=1000.0, until=1002.0)] == ["cs_2", "cs_1"]
    assert [p.session_id for p in store.payments(limit=1)] == ["cs_3"]
    assert [p.session_id for p in store.undelivered()] == ["cs_3"]


def test_find_by_payment_intent(store):
    store.claim(payment("cs_a", intent="pi_a"), "t", 1000.0, LEASE)
    store.record(Payment("cs_b", "machine_123", 1, payment_intent="pi_b"), 1000.0)
    assert store.find_by_payment_intent("pi_b").session_id == "cs_b"
    assert store.find_by_payment_intent("pi_nope") is None


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


def test_workers_opening_a_new_ledger_together_all_open_it(tmp_path):
    """gunicorn's workers start together on a new ledger file, each with its own connection.
    SQLite refuses the switch to WAL at once (no busy wait) while another connection makes it:
    a worker then died with "database is locked" (CI saw it once in 150 openings)."""
    from api.store_sqlite import SQLiteStore

    for attempt in range(100):
        path = str(tmp_path / f"ledger-{attempt}.db")
        barrier = threading.Barrier(8, timeout=30)
        errors: list[Exception] = []

        def open_it(path=path, barrier=barrier, errors=errors):
            barrier.wait()
            try:
                SQLiteStore(path).ping()
            except Exception as error:  # what a worker would die of
                errors.append(error)

        threads = [threading.Thread(target=open_it) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == [], f"opening {attempt}: {errors}"


def test_concurrent_claims_have_exactly_one_winner(store_factory):
    """Eight workers, each with its own connection, race for one session."""
    results = []
    barrier = threading.Barrier(8, timeout=30)  # a worker that dies must not hang the others

    def worker(index):
        own = store_factory()
        barrier.wait()
        results.append(own.claim(payment(), f"token-{index}", 1000.0, LEASE))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == sorted([Claim.CLAIMED] + [Claim.BUSY] * 7)


def test_an_ack_racing_the_puback_is_never_lost(store_factory):
    """The cabinet's ack and our publish record land at the same moment, many times over."""
    store, publisher, acker = store_factory(), store_factory(), store_factory()
    for index in range(10):
        session_id = f"cs_race_{index}"
        store.claim(payment(session_id, intent=f"pi_race_{index}"), "t", 1000.0, LEASE)
        barrier = threading.Barrier(2)

        def publish(sid=session_id, gate=barrier) -> None:
            gate.wait()
            publisher.published(sid, "t", {sid: 0}, 1001.0)

        def ack(sid=session_id, gate=barrier) -> None:
            gate.wait()
            acker.ack("machine_123", sid, "done", "", 1001.0)

        threads = [threading.Thread(target=f) for f in (publish, ack)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        part = store.get(session_id).parts[0]
        assert (part.state, part.done_at) == (PartState.DONE, 1001.0)


def test_cabinets_keep_their_latest_status_and_any_message_moves_last_seen(store):
    assert store.cabinets() == []
    store.cabinet_seen(Cabinet("cab-b", "online", 1000.0, "1.0.0", 0))
    store.cabinet_seen(Cabinet("cab-a", "online", 1001.0, "1.0.0", 2, "clock_unset"))
    store.cabinet_seen(Cabinet("cab-b", "offline", 1002.0, "1.0.0", 0))
    store.cabinet_heard("cab-a", 1005.0)
    store.cabinet_heard("cab-a", 1004.0)  # an older message handled late
    store.cabinet_heard("cab-c", 1006.0)  # an ack before any status
    assert store.cabinets() == [
        Cabinet("cab-a", "online", 1005.0, "1.0.0", 2, "clock_unset"),
        Cabinet("cab-b", "offline", 1002.0, "1.0.0", 0),
        Cabinet("cab-c", "online", 1006.0),
    ]


def test_heartbeats(store):
    store.heartbeat(Heartbeat("listener", 1000.0, {"connected": True, "recorded": 3}))
    store.heartbeat(Heartbeat("sweep", 1001.0, {"refunded": 1}))
    store.heartbeat(Heartbeat("listener", 1002.0, {"connected": False, "recorded": 4}))
    assert store.heartbeats() == [
        Heartbeat("listener", 1002.0, {"connected": False, "recorded": 4}),
        Heartbeat("sweep", 1001.0, {"refunded": 1}),
    ]
    assert store.heartbeat_of("sweep").at == 1001.0


# --- SQLite only ----------------------------------------------------------------------------------
def test_a_release_between_a_claims_read_and_write_never_refuses_a_paid_payment(tmp_path):
    """Why 6: the claim was an UPSERT then a separate SELECT; a release in between made a paid,
    uncredited session answer `200 refused`. The release is fired exactly there (when the
    claiming connection starts its SELECT) from another connection."""
    from api.store_sqlite import SQLiteStore

    path = str(tmp_path / "ledger.db")
    holder, claimer = SQLiteStore(path), SQLiteStore(path)
    assert holder.claim(payment(), "holder", 1000.0, LEASE) == Claim.CLAIMED
    fired = threading.Event()
    released = threading.Event()

    def release_in_the_gap(statement: str) -> None:
        if statement.lstrip().upper().startswith("SELECT") and not fired.is_set():
            fired.set()
            thread = threading.Thread(
                target=lambda: (holder.release("cs_test_1", "holder", 1001.0), released.set())
            )
            thread.start()
            released.wait(1.0)  # lands at once unless the claim holds the write lock

    claimer._connection().set_trace_callback(release_in_the_gap)
    answer = claimer.claim(payment(), "claimer", 1002.0, LEASE)
    claimer._connection().set_trace_callback(None)
    assert fired.is_set()
    assert answer in (Claim.CLAIMED, Claim.BUSY)
    released.wait(10)
    assert claimer.get("cs_test_1").state == State.PAID


def test_sqlite_commits_are_durable_before_stripe_hears_200(tmp_path):
    """Why 7: WAL with synchronous=NORMAL may lose the last commits on a power cut (a payment
    marked published after Stripe got 200). The commit that ends a delivery runs with FULL (an
    fsync, which also makes every earlier unsynced commit durable); the claim before the publish
    does not need one."""
    from api.store_sqlite import SQLiteStore

    store = SQLiteStore(str(tmp_path / "ledger.db"))
    seen: list[str] = []
    store._connection().set_trace_callback(seen.append)
    store.claim(payment(), "t", 1000.0, LEASE)
    before_publish, seen[:] = list(seen), []
    store.published("cs_test_1", "t", {"cs_test_1": 0}, 1001.0)
    store._connection().set_trace_callback(None)
    assert not any("synchronous=FULL" in statement for statement in before_publish)
    full = seen.index("PRAGMA synchronous=FULL")
    assert full < seen.index("COMMIT") < seen.index("PRAGMA synchronous=NORMAL")


def test_a_v1_ledger_is_converted_in_place(tmp_path):
    import sqlite3

    from api.store_sqlite import SQLiteStore

    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE payments (session_id TEXT PRIMARY KEY, machine_id TEXT NOT NULL,
            credits INTEGER NOT NULL, amount INTEGER, currency TEXT, payment_intent TEXT,
            state TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,
            published_at REAL, acked_at REAL, claim_token TEXT, claim_expires REAL);
        CREATE TABLE cabinets (machine_id TEXT PRIMARY KEY, state TEXT NOT NULL,
            last_seen REAL NOT NULL, firmware TEXT NOT NULL DEFAULT '',
            pending_credits INTEGER NOT NULL DEFAULT 0);
        INSERT INTO payments VALUES ('cs_done', 'cab-a', 2, 200, 'usd', 'pi_1', 'acked',
            10, 12, 11, 12, NULL, NULL);
        INSERT INTO payments VALUES ('cs_sent', 'cab-a', 1, 100, 'usd', 'pi_2', 'published',
            20, 21, 21, NULL, NULL, NULL);
        INSERT INTO payments VALUES ('cs_wait', 'cab-b', 1, 100, 'usd', 'pi_3', 'pending',
            30, 30, NULL, NULL, NULL, NULL);
        INSERT INTO cabinets VALUES ('cab-a', 'online', 40, '1.0.0', 0);
        """
    )
    old.commit()
    old.close()
    store = SQLiteStore(str(path))
    states = {p.session_id: p.state for p in store.payments()}
    assert states == {"cs_done": State.DONE, "cs_sent": State.PUBLISHED, "cs_wait": State.PENDING}
    assert store.cabinets()[0].problem == ""
    assert store.ack("cab-a", "cs_sent", "done", "", 50.0) == "done"
