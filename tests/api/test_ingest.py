"""POST /ingest/mqtt: acks and statuses forwarded by a broker's rule (EMQX HTTP data integration,
AWS IoT rule HTTP action), for the API on Lambda where no listener runs."""

from __future__ import annotations

import json
import time

import pytest

from api.store import PartState, Payment, State, planned

TOKEN = "ingest-token-for-tests"


@pytest.fixture
def ingesting(make_app, store_url):
    app = make_app(INGEST_TOKEN=TOKEN, STORE_URL=store_url)
    store = app.extensions["arcade"].store
    now = time.time()
    payment = planned(Payment("cs_ingest", "cab-a", 45, 4500, "usd"), now=now)
    store.claim(payment, "t", now, 60)
    store.published("cs_ingest", "t", {p.id: 0 for p in payment.parts}, now)
    return app


def post(app, body, token=TOKEN):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return app.test_client().post("/ingest/mqtt", json=body, headers=headers)


def test_an_ack_as_emqx_sends_it_by_default(ingesting):
    """EMQX's HTTP action with an empty body template sends the rule's fields; the payload is the
    message text."""
    body = {
        "topic": "arcade/machine/cab-a/ack",
        "payload": json.dumps({"machineId": "cab-a", "id": "cs_ingest:2", "state": "received"}),
        "clientid": "cab-a",
        "username": "cab-a",
        "qos": 1,
        "timestamp": 1796155972000,
    }
    response = post(ingesting, body)
    assert (response.status_code, response.json) == (200, {"recorded": "received"})
    parts = ingesting.extensions["arcade"].store.get("cs_ingest").parts
    assert [p.state for p in parts] == ["published", "received", "published"]


def test_a_list_with_the_payload_as_json_and_a_status(ingesting):
    body = [
        {"topic": "arcade/machine/cab-a/ack", "payload": {"id": f"cs_ingest:{n}"}}
        for n in (1, 2, 3)
    ] + [{"topic": "arcade/machine/cab-a/status", "payload": {"state": "online"}}]
    response = post(ingesting, body)
    assert response.json == {"recorded": ["done", "done", "done", "online"]}
    store = ingesting.extensions["arcade"].store
    assert store.get("cs_ingest").state == State.DONE
    assert [c.state for c in store.cabinets()] == ["online"]


def test_only_the_payments_own_cabinet_counts(ingesting):
    body = {"topic": "arcade/machine/cab-b/ack", "payload": {"id": "cs_ingest:1"}}
    assert post(ingesting, body).json == {"recorded": "ack_wrong_machine"}
    parts = ingesting.extensions["arcade"].store.get("cs_ingest").parts
    assert parts[0].state == PartState.PUBLISHED


def test_a_bad_message_is_dropped_with_200_so_the_broker_does_not_retry_it(ingesting):
    body = {"topic": "arcade/machine/cab-a/status", "payload": '{"state": "on", "x": 1}'}
    assert (post(ingesting, body).status_code, post(ingesting, body).json) == (
        200,
        {"recorded": "dropped"},
    )


@pytest.mark.parametrize("token", [None, "wrong", TOKEN + "x"])
def test_without_the_token_nothing_is_recorded(ingesting, token):
    body = {"topic": "arcade/machine/cab-a/ack", "payload": {"id": "cs_ingest:1"}}
    response = post(ingesting, body, token)
    assert response.status_code == 401 and response.json["error"]
    assert ingesting.extensions["arcade"].store.get("cs_ingest").state == State.PUBLISHED


@pytest.mark.parametrize(
    "body", [{"payload": "{}"}, {"topic": 1, "payload": "{}"}, [], [{"topic": "t"}] * 101, "x"]
)
def test_a_malformed_body_is_400(ingesting, body):
    assert post(ingesting, body).status_code == 400


def test_without_a_configured_token_the_route_is_off(make_app):
    response = post(make_app(), {"topic": "t", "payload": "{}"})
    assert response.status_code == 503 and "INGEST_TOKEN" in response.json["error"]
