"""Test checkout mode: a local "Pay (test)" page that drives the real webhook path, and only where
it cannot be abused (issue 11, "Why" 1)."""

from __future__ import annotations

import re

import pytest

from api.settings import SettingsError
from api.store import State
from tests.api.conftest import OPERATOR

LOCAL = "http://127.0.0.1:5000"


@pytest.fixture
def test_app(make_app):
    return make_app(TEST_CHECKOUT="true", STRIPE_API_KEY="", CREDITS_PER_PURCHASE="2",
                    PUBLIC_URL=LOCAL)


def form_on(page: str) -> dict[str, str]:
    return dict(re.findall(r'name="(session_id|token)" value="([^"]+)"', page))


def text_of(response) -> str:
    """What a person reads: the page without its markup."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)))


def open_and_pay(client, machine_id="machine_123", **environ):
    form = form_on(client.get(f"/test-checkout/{machine_id}", **environ).get_data(as_text=True))
    return form, client.post(f"/test-checkout/{machine_id}", data=form, **environ)


# --- where it may run at all ------------------------------------------------------------------


@pytest.mark.parametrize("key", ["sk_live_abc", "sk_test_abc", "rk_test_abc"])
def test_refused_beside_any_stripe_key(make_app, key):
    with pytest.raises(SettingsError, match="TEST_CHECKOUT=true needs STRIPE_API_KEY unset"):
        make_app(TEST_CHECKOUT="true", STRIPE_API_KEY=key, PUBLIC_URL=LOCAL)


def test_refused_without_public_url(make_app):
    with pytest.raises(SettingsError, match="TEST_CHECKOUT=true needs PUBLIC_URL"):
        make_app(TEST_CHECKOUT="true", STRIPE_API_KEY="")


@pytest.mark.parametrize("url", ["http://192.0.2.10:5000", "https://arcade.example.com"])
def test_a_public_url_off_this_machine_needs_the_network_named(make_app, url):
    with pytest.raises(SettingsError, match="TEST_CHECKOUT_NETWORK"):
        make_app(TEST_CHECKOUT="true", STRIPE_API_KEY="", PUBLIC_URL=url)
    app = make_app(TEST_CHECKOUT="true", STRIPE_API_KEY="", PUBLIC_URL=url,
                   TEST_CHECKOUT_NETWORK="192.0.2.0/24")
    assert app.extensions["arcade"].settings.public_url == url


@pytest.mark.parametrize("value", ["192.0.2.0/33", "lan", "192.0.2.0/24,"])
def test_test_checkout_network_is_validated(make_app, value):
    if value.endswith(","):  # an empty item is ignored, the rest must be valid
        make_app(TEST_CHECKOUT_NETWORK=value)
        return
    with pytest.raises(SettingsError, match="TEST_CHECKOUT_NETWORK"):
        make_app(TEST_CHECKOUT_NETWORK=value)


def test_off_unless_asked_for(client):
    assert client.get("/test-checkout/machine_123").status_code == 404


# --- links from the configuration, never from the request --------------------------------------


def test_payment_link_points_to_the_local_page_from_public_url(test_app, stripe_api):
    response = test_app.test_client().post(
        "/create-payment-link", json={"machine_id": "machine_123"}, headers=OPERATOR,
        environ_base={"HTTP_HOST": "evil.example"},
    )
    assert response.status_code == 200
    assert response.json["url"] == f"{LOCAL}/test-checkout/machine_123"
    assert stripe_api.requests == []


def test_page_form_posts_to_its_own_path_whatever_the_host_header(test_app):
    client = test_app.test_client()
    page = client.get("/test-checkout/machine_123", headers={"Host": "evil.example"})
    assert 'action="/test-checkout/machine_123"' in page.get_data(as_text=True)
    assert "evil.example" not in page.get_data(as_text=True)


# --- who may use it -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["get", "post"])
def test_clients_off_this_machine_are_refused(test_app, method):
    client = test_app.test_client()
    response = getattr(client, method)("/test-checkout/machine_123",
                                       environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert response.status_code == 403 and "TEST_CHECKOUT_NETWORK" in response.json["error"]


def test_a_request_through_an_unknown_proxy_is_not_local(test_app, subscribe):
    """nginx on this machine forwarding from the internet: the API sees 127.0.0.1."""
    coinpulses = subscribe("arcade/machine/+/coinpulse")
    client = test_app.test_client()
    form = form_on(client.get("/test-checkout/machine_123").get_data(as_text=True))
    forwarded = {"X-Forwarded-For": "203.0.113.9"}
    response = client.post("/test-checkout/machine_123", data=form, headers=forwarded)
    assert response.status_code == 403
    assert coinpulses.nothing_more() == []


def test_the_named_network_may_pay(make_app, subscribe):
    app = make_app(TEST_CHECKOUT="true", STRIPE_API_KEY="", PUBLIC_URL="http://192.0.2.1:5000",
                   TEST_CHECKOUT_NETWORK="192.0.2.0/24")
    coinpulses = subscribe("arcade/machine/+/coinpulse")
    phone = {"environ_base": {"REMOTE_ADDR": "192.0.2.7"}}
    _, paid = open_and_pay(app.test_client(), **phone)
    assert paid.status_code == 303
    assert len(coinpulses.nothing_more()) == 1
    stranger = app.test_client().get("/test-checkout/machine_123",
                                     environ_base={"REMOTE_ADDR": "198.51.100.7"})
    assert stranger.status_code == 403


def test_a_trusted_proxy_passes_the_real_client_address(make_app):
    app = make_app(TEST_CHECKOUT="true", STRIPE_API_KEY="", PUBLIC_URL=LOCAL,
                   TRUSTED_PROXY_HOPS="1")
    client = app.test_client()
    assert client.get("/test-checkout/machine_123",
                      headers={"X-Forwarded-For": "127.0.0.1"}).status_code == 200
    assert client.get("/test-checkout/machine_123",
                      headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 403


# --- each Pay button belongs to the page that showed it --------------------------------------


@pytest.mark.parametrize(
    ("form", "headers", "status"),
    [
        ({"session_id": "cs_test_local_" + "a" * 32}, {}, 403),  # a cross-site form: no token
        ({"session_id": "cs_test_local_" + "a" * 32, "token": "0" * 64}, {}, 403),
        ({"session_id": "cs_test_local_" + "a" * 32, "token": "\xe9"}, {}, 403),
        (None, {"Sec-Fetch-Site": "cross-site"}, 403),  # a real page's form, posted elsewhere
    ],
    ids=["no token", "forged token", "non-ascii token", "cross-site"],
)
def test_forged_or_cross_site_posts_credit_nothing(test_app, subscribe, form, headers, status):
    coinpulses = subscribe("arcade/machine/+/coinpulse")
    client = test_app.test_client()
    if form is None:
        form = form_on(client.get("/test-checkout/machine_123").get_data(as_text=True))
    response = client.post("/test-checkout/machine_123", data=form, headers=headers)
    assert response.status_code == status and response.json["error"]
    assert coinpulses.nothing_more() == []


def test_a_token_is_for_its_own_session_and_cabinet(test_app, subscribe):
    coinpulses = subscribe("arcade/machine/+/coinpulse")
    client = test_app.test_client()
    form = form_on(client.get("/test-checkout/machine_123").get_data(as_text=True))
    other = form_on(client.get("/test-checkout/machine_123").get_data(as_text=True))
    assert client.post("/test-checkout/machine_456", data=form).status_code == 403
    mixed = {"session_id": other["session_id"], "token": form["token"]}
    assert client.post("/test-checkout/machine_123", data=mixed).status_code == 403
    assert coinpulses.nothing_more() == []


# --- the page itself ---------------------------------------------------------------------------


def test_page_says_test_loudly_and_cannot_be_framed(test_app):
    page = test_app.test_client().get("/test-checkout/machine_123")
    assert page.status_code == 200 and page.mimetype == "text/html"
    text = text_of(page)
    assert "TEST MODE — NO REAL PAYMENT" in text and "machine_123" in text
    assert "2 credits for" in text and "2.00 USD" in text
    assert form_on(page.get_data(as_text=True))["session_id"].startswith("cs_test_local_")
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]


def test_pay_button_credits_once_and_lands_on_the_receipt(test_app, subscribe):
    listener = subscribe("arcade/machine/+/coinpulse")
    client = test_app.test_client()
    form, paid = open_and_pay(client)
    # POST-redirect-GET to the receipt, where a real Payment Link sends the player.
    assert (paid.status_code, paid.headers["Location"]) == (303, f"/receipt/{form['session_id']}")
    message = listener.next().json()
    assert (message["id"], message["credits"]) == (form["session_id"], 2)
    assert "sending 2 credits to machine_123" in text_of(client.get(paid.headers["Location"]))
    # The form posted again (double click, back + resubmit): the same receipt, nothing sent.
    again = client.post("/test-checkout/machine_123", data=form)
    assert (again.status_code, again.headers["Location"]) == (303, paid.headers["Location"])
    assert listener.nothing_more() == []
    stored = test_app.extensions["arcade"].store.get(form["session_id"])
    assert stored.state == State.PUBLISHED and stored.amount == 200


def test_receipt_of_another_payment_or_cabinet_says_nothing_about_it(test_app):
    client = test_app.test_client()
    form, paid = open_and_pay(client)
    other = client.get(f"/test-checkout/machine_456?paid={form['session_id']}")
    assert "No such test payment for this cabinet." in text_of(other)
    assert "No such test payment" in text_of(client.get("/test-checkout/machine_123?paid=x"))


@pytest.mark.parametrize("session_id", ["", "cs_live_x", "cs_test_local_XYZ", "a" * 60])
def test_malformed_session_id_is_400(test_app, session_id):
    response = test_app.test_client().post(
        "/test-checkout/machine_123", data={"session_id": session_id, "token": "x"}
    )
    assert response.status_code == 400


def test_unknown_machine_is_404(make_app):
    app = make_app(TEST_CHECKOUT="true", STRIPE_API_KEY="", PUBLIC_URL=LOCAL, MACHINE_IDS="cab-a")
    assert app.test_client().get("/test-checkout/machine_123").status_code == 404
    assert app.test_client().get("/test-checkout/cab-a").status_code == 200


def test_a_failed_payment_keeps_its_session_so_pay_retries_it(make_app, own_broker, subscribe):
    app = make_app(TEST_CHECKOUT="true", STRIPE_API_KEY="", PUBLIC_URL=LOCAL,
                   MQTT_PORT=str(own_broker.port), MQTT_PUBLISH_TIMEOUT_MS="500")
    client = app.test_client()
    own_broker.stop()
    form, failed = open_and_pay(client)
    assert failed.status_code == 503 and "Not credited" in text_of(failed)
    assert form_on(failed.get_data(as_text=True))["session_id"] == form["session_id"]
    own_broker.start()
    listener = subscribe("arcade/machine/+/coinpulse", on=own_broker)
    retry = client.post("/test-checkout/machine_123", data=form_on(failed.get_data(as_text=True)))
    assert retry.status_code == 303
    assert listener.next().json()["id"] == form["session_id"]
