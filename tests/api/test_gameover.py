"""POST /gameover needs the cabinet's bearer token, then publishes the seed's gameover message."""

from __future__ import annotations

import pytest

from api.machines import machine_token
from tests.api.conftest import TOKEN_SECRET


def gameover(client, machine_id="machine_123", token=None, scheme="Bearer"):
    headers = {"Authorization": f"{scheme} {token}"} if token is not None else {}
    return client.post("/gameover", json={"machine_id": machine_id}, headers=headers)


def test_gameover_with_token_is_published(client, subscribe):
    listener = subscribe("arcade/machine/+/gameover")
    response = gameover(client, token=machine_token(TOKEN_SECRET, "machine_123"))
    assert response.status_code == 200
    assert response.json["message"] == "Game over signal sent"
    message = listener.next()
    assert message.topic == "arcade/machine/machine_123/gameover"
    body = message.json()
    assert body["machineId"] == "machine_123" and body["status"] == "game_over"
    assert body["id"] == response.json["id"] and body["timestamp"].endswith("Z")


@pytest.mark.parametrize(
    ("token", "scheme"),
    [
        (None, "Bearer"),  # no header at all
        ("", "Bearer"),
        ("not-the-token", "Bearer"),
        (machine_token(TOKEN_SECRET, "machine_456"), "Bearer"),  # another cabinet's token
        (machine_token("other-secret", "machine_123"), "Bearer"),
        (machine_token(TOKEN_SECRET, "machine_123"), "Basic"),
    ],
)
def test_gameover_without_a_valid_token_is_401_and_publishes_nothing(
    client, subscribe, token, scheme
):
    listener = subscribe("arcade/machine/+/gameover")
    response = gameover(client, token=token, scheme=scheme)
    assert response.status_code == 401 and "Bearer" in response.json["error"]
    assert listener.nothing_more() == []


def test_gameover_bad_machine_id_is_400(client):
    response = gameover(client, machine_id="../+", token="x")
    assert response.status_code == 400 and "machine_id" in response.json["error"]


def test_gameover_disabled_without_server_secret(make_app):
    client = make_app(MACHINE_TOKEN_SECRET="").test_client()
    response = gameover(client, token="anything")
    assert response.status_code == 503 and "MACHINE_TOKEN_SECRET" in response.json["error"]


def test_gameover_broker_down_is_503(make_app, own_broker):
    client = make_app(MQTT_PORT=str(own_broker.port)).test_client()
    own_broker.stop()
    response = gameover(client, token=machine_token(TOKEN_SECRET, "machine_123"))
    assert response.status_code == 503 and "not delivered" in response.json["error"]


def test_gameover_401_says_how_to_get_the_token(client):
    # The seed documented /gameover without a token: a user calling it so learns where it is.
    response = gameover(client, machine_id="machine_123")
    assert response.status_code == 401
    assert "arcade provision machine_123 --token-only" in response.json["error"]
