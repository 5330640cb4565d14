"""Rate limits per client address and per cabinet: a clear 429 with Retry-After."""

from __future__ import annotations

import pytest

from api.machines import machine_token
from api.settings import SettingsError
from tests.api.conftest import OPERATOR, TOKEN_SECRET


def link(client, machine_id="machine_123", address="127.0.0.1", headers=OPERATOR):
    return client.post("/create-payment-link", json={"machine_id": machine_id}, headers=headers,
                       environ_base={"REMOTE_ADDR": address})


def gameover(client, machine_id="machine_123", token=None):
    token = token or machine_token(TOKEN_SECRET, machine_id)
    return client.post("/gameover", json={"machine_id": machine_id},
                       headers={"Authorization": f"Bearer {token}"})


def assert_429(response) -> None:
    assert response.status_code == 429, response.json
    assert response.is_json and "too many requests" in response.json["error"]
    assert 1 <= int(response.headers["Retry-After"]) <= 60


def test_one_client_is_limited_others_are_not(make_app, stripe_api):
    client = make_app(RATE_LIMIT_PER_CLIENT="3 per minute", RATE_LIMIT_PER_CABINET="off"
                      ).test_client()
    assert [link(client).status_code for _ in range(3)] == [200, 200, 200]
    limited = link(client)
    assert_429(limited)
    assert "from this address" in limited.json["error"]
    assert link(client, address="127.0.0.2").status_code == 200


def test_one_cabinet_is_limited_whoever_asks(make_app, stripe_api):
    client = make_app(RATE_LIMIT_PER_CABINET="2 per minute").test_client()
    assert link(client, address="127.0.0.1").status_code == 200
    assert link(client, address="127.0.0.2").status_code == 200
    limited = link(client, address="127.0.0.3")
    assert_429(limited)
    assert "for cabinet machine_123" in limited.json["error"]
    assert link(client, machine_id="machine_456").status_code == 200


def test_strangers_cannot_use_up_a_cabinets_allowance(make_app, subscribe):
    """The per-cabinet count starts after the token check: failed attempts do not count."""
    client = make_app(RATE_LIMIT_PER_CABINET="2 per minute").test_client()
    for _ in range(5):
        assert gameover(client, token="not-the-token").status_code == 401
    assert gameover(client).status_code == 200
    assert gameover(client).status_code == 200
    assert_429(gameover(client))


def test_unauthenticated_floods_are_limited_per_client(make_app, stripe_api):
    client = make_app(RATE_LIMIT_PER_CLIENT="5 per minute").test_client()
    answers = [link(client, headers={}).status_code for _ in range(8)]
    assert answers == [401] * 5 + [429] * 3
    assert stripe_api.requests == []


def test_limits_can_be_turned_off(make_app, stripe_api):
    client = make_app(RATE_LIMIT_PER_CLIENT="off", RATE_LIMIT_PER_CABINET="off").test_client()
    assert {link(client).status_code for _ in range(80)} == {200}


@pytest.mark.parametrize("name", ["RATE_LIMIT_PER_CLIENT", "RATE_LIMIT_PER_CABINET"])
def test_a_bad_limit_is_refused_at_start_naming_it(make_app, name):
    with pytest.raises(SettingsError, match=name):
        make_app(**{name: "lots"})
