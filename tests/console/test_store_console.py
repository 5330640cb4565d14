"""The console's ledger additions, on SQLite and on DynamoDB (moto server): the same answers."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from api.ledger import plan_parts
from api.store import Cabinet, Payment
from api.store_console import AuditEntry, Incident, PaymentQuery, periods_of

UTC_ZONE = ZoneInfo("UTC")
# 2026-12-01 (a Tuesday) 10:00 UTC
T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC).timestamp()
DAY = 86400


def paid(store, session_id, machine="cab-a", amount=200, credits=2, at=T0, currency="usd"):
    """A paid purchase the broker took (as crediting.credit leaves it)."""
    payment = Payment(session_id, machine, credits, amount, currency, f"pi_{session_id}")
    parts = plan_parts(session_id, credits, amount, 20, at, 180, 60)
    assert str(store.claim(replace(payment, parts=parts, paid_at=at), "tok", at, 60)) == "claimed"
    store.published(session_id, "tok", {part.id: 0 for part in parts}, at)
    store.count_money(session_id, UTC_ZONE)  # the store did it already: counting is idempotent
    return payment


def refund(store, session_id, amount, at=T0 + 1):
    store.stripe_refunded(session_id, amount, at)


def dispute(store, session_id, at=T0 + 1):
    store.stripe_disputed(session_id, at)


def test_operators_are_stored_replaced_and_removed(store):
    assert store.operator_hash("ana") is None
    store.put_operator("ana", "$argon2id$one", 1.0)
    store.put_operator("bo", "$argon2id$two", 2.0)
    store.put_operator("ana", "$argon2id$three", 3.0)
    assert store.operator_hash("ana") == "$argon2id$three"
    assert [o.name for o in store.operators()] == ["ana", "bo"]
    assert store.remove_operator("bo") and not store.remove_operator("bo")
    assert [o.name for o in store.operators()] == ["ana"]


def test_sign_in_failures_count_per_key_and_window(store):
    assert store.failures("user:ana", 7) == 0
    assert [store.count_failure("user:ana", 7, T0) for _ in range(3)] == [1, 2, 3]
    assert store.failures("user:ana", 7) == 3
    assert store.failures("user:ana", 8) == 0 and store.failures("ip:1", 7) == 0


def test_audit_log_is_newest_first(store):
    for i, action in enumerate(["comp", "refund", "retire"]):
        store.add_audit(AuditEntry(T0 + i, "ana", action, f"s{i}", reason=f"why {i}", result="ok"))
    log = store.audit_log()
    assert [(e.action, e.subject, e.reason, e.operator) for e in log] == [
        ("retire", "s2", "why 2", "ana"), ("refund", "s1", "why 1", "ana"),
        ("comp", "s0", "why 0", "ana"),
    ]
    assert len(store.audit_log(limit=2)) == 2


def test_an_incident_opens_once_and_is_sent_once(store):
    incident = Incident("offline:cab-a:1", "offline_owed", "cab-a", "cab-a offline", T0)
    assert store.open_incident(incident) is True
    assert store.open_incident(incident) is False
    assert store.claim_incident(incident.key, T0 + 1) is True
    assert store.claim_incident(incident.key, T0 + 2) is False
    store.incident_failed(incident.key, "HTTP 500")
    [known] = store.incidents()
    assert known.sent_at is None and known.send_error == "HTTP 500"
    assert store.claim_incident(incident.key, T0 + 3) is True
    [known] = store.incidents()
    assert known.sent_at == T0 + 3 and known.kind == "offline_owed"


def test_money_is_counted_once_and_refunds_are_subtracted(store):
    paid(store, "cs_1", amount=200, credits=2)
    paid(store, "cs_2", amount=500, credits=5, at=T0 + 60)
    paid(store, "cs_3", machine="cab-b", amount=100, credits=1, currency="eur")
    store.count_money("cs_1", UTC_ZONE)  # again: nothing changes
    refund(store, "cs_2", 500, T0 + 120)
    store.count_money("cs_2", UTC_ZONE)
    store.count_money("cs_2", UTC_ZONE)
    rows = {(t.machine_id, t.currency): t for t in store.period_totals("day", "2026-12-01")}
    usd = rows[("cab-a", "usd")]
    assert (usd.gross, usd.refunded, usd.net, usd.payments, usd.credits) == (700, 500, 200, 2, 7)
    assert rows[("cab-b", "eur")].net == 100
    week = {(t.machine_id, t.currency): t.net for t in store.period_totals("week", "2026-11-30")}
    month = {(t.machine_id, t.currency): t.net for t in store.period_totals("month", "2026-12")}
    assert week == month == {("cab-a", "usd"): 200, ("cab-b", "eur"): 100}


def test_the_ledger_counts_a_delivery_without_being_asked(store):
    payment = Payment("cs_auto", "cab-a", 2, 200, "usd", "pi_auto")
    parts = plan_parts("cs_auto", 2, 200, 20, T0, 180, 60)
    store.claim(replace(payment, parts=parts, paid_at=T0), "tok", T0, 60)
    store.published("cs_auto", "tok", {part.id: 0 for part in parts}, T0)
    [total] = store.period_totals("day", "2026-12-01")
    assert (total.machine_id, total.gross, total.payments, total.credits) == ("cab-a", 200, 1, 2)


def test_disputes_are_subtracted_and_comps_counted_apart(store):
    paid(store, "cs_d", amount=300, credits=3)
    dispute(store, "cs_d", T0 + 5)
    store.count_money("cs_d", UTC_ZONE)
    paid(store, "comp_abc", amount=None, credits=4, currency=None)
    rows = {(t.machine_id, t.currency): t for t in store.period_totals("day", "2026-12-01")}
    assert (rows[("cab-a", "usd")].disputed, rows[("cab-a", "usd")].net) == (300, 0)
    assert rows[("cab-a", "")].comp_credits == 4 and rows[("cab-a", "")].gross == 0


def test_series_for_the_fleet_and_one_cabinet(store):
    for day in range(3):
        paid(store, f"cs_a{day}", amount=100 * (day + 1), at=T0 + day * DAY)
        paid(store, f"cs_b{day}", machine="cab-b", amount=1000, at=T0 + day * DAY)
    store.count_gameover("cab-a", periods_of(T0 + DAY, UTC_ZONE))
    first, last = periods_of(T0, UTC_ZONE), periods_of(T0 + 2 * DAY, UTC_ZONE)
    fleet = [(t.period, t.net) for t in store.fleet_series("day", first, last) if t.currency]
    assert fleet == [("2026-12-01", 1100), ("2026-12-02", 1200), ("2026-12-03", 1300)]
    days = ["2026-11-30", "2026-12-01", "2026-12-02", "2026-12-03"]
    mine = store.cabinet_series("cab-a", "day", days)
    assert [(t.period, t.net) for t in mine if t.currency] == [
        ("2026-12-01", 100), ("2026-12-02", 200), ("2026-12-03", 300)]
    assert [(t.period, t.gameovers) for t in mine if not t.currency] == [("2026-12-02", 1)]
    assert [t.net for t in store.fleet_series("month", first, last) if t.currency] == [3600]


def test_concurrent_counting_of_one_payment_counts_it_once(store_factory):
    store = store_factory()
    for i in range(5):
        paid(store, f"cs_c{i}")
    refund(store, "cs_c0", 200)
    errors = []

    def count(i):
        try:
            handle = store_factory()
            for n in range(5):
                handle.count_money(f"cs_c{(n + i) % 5}", UTC_ZONE)
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=count, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    [usd] = [t for t in store.period_totals("day", "2026-12-01") if t.currency == "usd"]
    assert (usd.gross, usd.refunded, usd.payments) == (1000, 200, 5)


def test_payment_search_and_problems(store):
    paid(store, "cs_x1", at=T0)
    paid(store, "cs_x2", machine="cab-b", at=T0 + 10)
    paid(store, "cs_x3", at=T0 + 20)
    dispute(store, "cs_x3", T0 + 30)
    ids = lambda found: [p.session_id for p in found]  # noqa: E731
    assert ids(store.search_payments(PaymentQuery())) == ["cs_x3", "cs_x2", "cs_x1"]
    assert ids(store.search_payments(PaymentQuery(machine_id="cab-a"))) == ["cs_x3", "cs_x1"]
    assert ids(store.search_payments(PaymentQuery(state="disputed"))) == ["cs_x3"]
    assert ids(store.search_payments(PaymentQuery(start=T0 + 5, end=T0 + 15))) == ["cs_x2"]
    assert ids(store.problem_payments(T0 - 1)) == ["cs_x3"]
    assert ids(store.payments_between("cab-a", T0, T0 + 21)) == ["cs_x3", "cs_x1"]
    assert store.owed_credits("cab-a", T0 - 1) == 2  # cs_x1 published, not done


def test_retired_cabinets_and_cabinet_listing(store):
    store.cabinet_seen(Cabinet("cab-b", "online", T0, "1.0.0", 0))
    store.cabinet_seen(Cabinet("cab-a", "offline", T0 + 1, "1.0.0", 3))
    assert [c.machine_id for c in store.cabinets()] == ["cab-a", "cab-b"]
    store.set_retired("cab-a", True, T0)
    store.set_retired("cab-a", True, T0 + 1)
    assert store.retired() == {"cab-a"}
    store.set_retired("cab-a", False, T0 + 2)
    assert store.retired() == set()


def test_last_payment_per_cabinet_and_credits_owed(store):
    paid(store, "cs_l1", at=T0 + 50)
    paid(store, "cs_l0", at=T0)  # counted later, but older: not the last
    paid(store, "cs_l2", machine="cab-b", at=T0 + 10, credits=3)
    last = store.last_payments()
    assert (last["cab-a"].session_id, last["cab-a"].amount) == ("cs_l1", 200)
    assert last["cab-b"].session_id == "cs_l2"
    store.ack("cab-a", "cs_l1", "done", "", T0 + 60)
    assert store.owed_by_cabinet(T0 - 1) == {"cab-a": 2, "cab-b": 3}
