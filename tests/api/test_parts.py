"""A purchase's part plan: stored at the first claim, ids that never change meaning, retries that
publish only what the broker did not confirm, and a cap on parts per purchase.

The network faults are real: a loopback proxy between the API and Mosquitto loses the chosen
MQTT packet (tests/netfault.py), as a flaky link loses a PUBACK or a PUBLISH."""

from __future__ import annotations

import itertools

import pytest

from api.store import PartState, State
from tests.api.conftest import checkout_session, deliver, stripe_event
from tests.netfault import PUBACK, PUBLISH, MqttProxy

COINS = "arcade/machine/machine_123/coinpulse"


@pytest.fixture
def proxy(broker):
    proxy = MqttProxy(broker.host, broker.port)
    yield proxy
    proxy.close()


def through(proxy: MqttProxy, **settings: str) -> dict[str, str]:
    return {"MQTT_BROKER": proxy.host, "MQTT_PORT": str(proxy.port), **settings}


def lose_the_nth(kind: int, to_broker: bool, *numbers: int):
    """A drop rule: lose the n-th packet of `kind` going that way (counted from 1)."""
    counter = itertools.count(1)

    def drop(packet) -> bool:
        if packet.kind != kind or packet.to_broker != to_broker:
            return False
        return next(counter) in numbers

    return drop


def cabinet_credits(messages) -> int:
    """What a cabinet that remembers every id pulses: the first message of each id counts."""
    first: dict[str, int] = {}
    for message in messages:
        body = message.json()
        first.setdefault(body["id"], body["credits"])
    return sum(first.values())


def test_a_retry_publishes_only_the_parts_the_broker_did_not_confirm(
    make_app, proxy, subscribe
):
    coins = subscribe(COINS)
    app = make_app(**through(proxy, MQTT_PUBLISH_TIMEOUT_MS="1000"))
    proxy.drop = lose_the_nth(PUBACK, False, 3)  # the third part's PUBACK is lost
    session = checkout_session(credits=45, amount=4500)
    event = stripe_event("checkout.session.completed", session)
    first = deliver(app.test_client(), event)
    assert first.status_code == 503, first.json
    assert [m.json()["id"] for m in coins.wait_for(3)] == [
        f"{session['id']}:1",
        f"{session['id']}:2",
        f"{session['id']}:3",
    ]
    parts = app.extensions["arcade"].store.get(session["id"]).parts
    assert [p.state for p in parts] == [PartState.PUBLISHED, PartState.PUBLISHED, PartState.PAID]

    retry = deliver(app.test_client(), event)  # Stripe's retry
    assert (retry.status_code, retry.json["result"]) == (200, "published")
    # Only the part the broker never confirmed goes out again (same id, same credits).
    again = [m.json() for m in coins.nothing_more()]
    assert [(m["id"], m["credits"]) for m in again] == [(f"{session['id']}:3", 5)]


@pytest.mark.parametrize(
    ("first_limit", "retry_limit", "lost"),
    [
        # 20 + 10 published, the second PUBACK lost; the retry under a limit of 10 used to send
        # :1 (dropped as a repeat), :2 (dropped) and a new :3: 40 credits for 30 paid.
        ("20", "10", lose_the_nth(PUBACK, False, 2)),
        # 10 + 10 + 10, only :1 reached the broker; the retry under a limit of 20 used to send
        # :1 = 20 (dropped as a repeat) and :2 = 10: 20 credits for 30 paid.
        ("10", "20", lose_the_nth(PUBLISH, True, 2, 3)),
    ],
    ids=["limit-lowered", "limit-raised"],
)
def test_the_part_plan_survives_a_changed_limit(
    make_app, proxy, subscribe, first_limit, retry_limit, lost
):
    coins = subscribe(COINS)
    before = make_app(
        **through(proxy, MQTT_PUBLISH_TIMEOUT_MS="1000", MAX_CREDITS_PER_MESSAGE=first_limit)
    )
    proxy.drop = lost
    session = checkout_session(credits=30, amount=3000)
    event = stripe_event("checkout.session.completed", session)
    assert deliver(before.test_client(), event).status_code == 503
    # The operator changes MAX_CREDITS_PER_MESSAGE and restarts the API; Stripe retries.
    after = make_app(MAX_CREDITS_PER_MESSAGE=retry_limit)
    retry = deliver(after.test_client(), event)
    assert retry.status_code == 200, retry.json
    assert cabinet_credits(coins.nothing_more()) == 30


def test_a_purchase_needing_more_than_eight_parts_is_refused_visibly(app, client, subscribe):
    """1,400 credits at 20 a message would be 70 ids: more than a cabinet remembers (64), so a
    repeat of the early ones would pulse again. Nothing is published; the ledger says why and the
    refund sweep pays it back."""
    coins = subscribe(COINS)
    session = checkout_session(credits=1400, amount=140000)
    response = deliver(client, stripe_event("checkout.session.completed", session))
    assert response.status_code == 200
    assert response.json["result"] == "undeliverable"
    assert "parts" in response.json["reason"]
    assert coins.nothing_more() == []
    stored = app.extensions["arcade"].store.get(session["id"])
    assert stored.state == State.UNDELIVERABLE
    [part] = stored.parts
    assert (part.state, part.credits, part.amount) == (PartState.UNDELIVERABLE, 1400, 140000)
    assert part.reason == "too_many_parts"


def test_the_plan_caps_parts_at_eight(app, client, subscribe):
    coins = subscribe(COINS)
    session = checkout_session(credits=160, amount=16000)  # 8 x 20: the largest allowed
    response = deliver(client, stripe_event("checkout.session.completed", session))
    assert response.json["result"] == "published"
    assert len(coins.nothing_more()) == 8
    parts = app.extensions["arcade"].store.get(session["id"]).parts
    assert [p.id for p in parts] == [f"{session['id']}:{n}" for n in range(1, 9)]
    assert sum(p.amount for p in parts) == 16000
