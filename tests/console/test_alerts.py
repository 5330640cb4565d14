"""Alerts reach an incoming-webhook receiver (a local HTTP server) once per incident."""

from __future__ import annotations

import queue
from dataclasses import replace

import pytest

from api import alerts
from api.ledger import plan_parts
from api.settings import settings_from_env
from api.store import Cabinet, Payment

NOW = 1_800_000_000.0


def settings(url="", **more):
    env = {"STRIPE_WEBHOOK_SECRET": "whsec_x", "MQTT_BROKER": "127.0.0.1",
           "ALERT_WEBHOOK_URL": url, "ALERT_OFFLINE_MINUTES": "10", **more}
    return settings_from_env(env)


def owe(store, machine_id="cab-a", at=NOW - 1200):
    """A paid purchase the broker took and the cabinet has not confirmed."""
    payment = Payment(f"cs_{machine_id}_{int(at)}", machine_id, 2, 200, "usd", f"pi_{int(at)}")
    parts = plan_parts(payment.session_id, 2, 200, 20, at, 180, 60)
    store.claim(replace(payment, parts=parts, paid_at=at), "t", at, 60)
    store.published(payment.session_id, "t", {part.id: 0 for part in parts}, at)
    return payment


def received(receiver, timeout=5.0):
    return receiver.bodies.get(timeout=timeout)


def test_offline_cabinet_owing_credits_alerts_once(store, alert_receiver):
    config = settings(alert_receiver.url)
    store.cabinet_seen(Cabinet("cab-a", "offline", NOW - 900, "1.0.0", 0))
    store.cabinet_seen(Cabinet("cab-b", "offline", NOW - 900, "1.0.0", 0))  # owes nothing
    store.cabinet_seen(Cabinet("cab-c", "offline", NOW - 60, "1.0.0", 4))  # not long enough
    owe(store, "cab-a")
    assert alerts.sweep(store, config, NOW) == [f"offline:cab-a:{NOW - 900!r}"]
    body = received(alert_receiver)["json"]
    assert body["alert"]["kind"] == "offline_owed" and body["alert"]["subject"] == "cab-a"
    assert "offline for 15 min with 2 credit(s) owed" in body["text"]
    assert body["content"] == body["text"]  # Discord reads `content`, Slack `text`
    assert alerts.sweep(store, config, NOW + 60) == []  # the same outage: no second alert
    with pytest.raises(queue.Empty):
        alert_receiver.bodies.get(timeout=0.3)
    # Back online, then offline again: a new outage is a new incident.
    store.cabinet_seen(Cabinet("cab-a", "offline", NOW + 100, "1.0.0", 1))
    # (cab-c, with its credits, has now been offline long enough too.)
    assert set(alerts.sweep(store, config, NOW + 1000)) == {
        f"offline:cab-a:{NOW + 100!r}", f"offline:cab-c:{NOW - 60!r}"}


def test_problem_payments_alert_once_each(store, alert_receiver):
    config = settings(alert_receiver.url, ALERT_WEBHOOK_TOPIC="arcade-alerts")
    payment = owe(store, "cab-a", at=NOW - 10)
    store.stripe_disputed(payment.session_id, NOW - 5)
    assert alerts.sweep(store, config, NOW) == [f"payment:{payment.session_id}:disputed"]
    body = received(alert_receiver)["json"]
    assert body["topic"] == "arcade-alerts" and body["title"] == "Arcade STEM: disputed"
    assert alerts.sweep(store, config, NOW + 5) == []


def test_a_failed_send_is_tried_again_by_the_next_sweep(store, alert_receiver):
    config = settings(alert_receiver.url)
    store.cabinet_seen(Cabinet("cab-a", "offline", NOW - 900, "1.0.0", 3))
    alert_receiver.status = 500
    assert alerts.sweep(store, config, NOW) == []
    [incident] = store.incidents()
    assert incident.sent_at is None and "500" in incident.send_error
    alert_receiver.status = 200
    assert alerts.sweep(store, config, NOW + 30) == [incident.key]
    assert received(alert_receiver)["type"] == "application/json"


def test_without_a_webhook_incidents_are_only_recorded(store):
    store.cabinet_seen(Cabinet("cab-a", "offline", NOW - 900, "1.0.0", 3))
    assert alerts.sweep(store, settings(), NOW) == []
    assert [i.kind for i in store.incidents()] == ["offline_owed"]


def test_two_sweeps_at_once_send_once(store_factory, alert_receiver):
    import threading

    config = settings(alert_receiver.url)
    store = store_factory()
    for name in ("cab-a", "cab-b", "cab-c"):
        store.cabinet_seen(Cabinet(name, "offline", NOW - 900, "1.0.0", 1))
    results: list[list[str]] = []
    threads = [threading.Thread(target=lambda: results.append(
        alerts.sweep(store_factory(), config, NOW))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sent = sorted(key for result in results for key in result)
    assert len(sent) == 3 and len(set(sent)) == 3
    assert alert_receiver.bodies.qsize() == 3
