"""Sign-in, the session cookie, CSRF and the limit on failed attempts."""

from __future__ import annotations

import pytest

from tests.console.conftest import OPERATOR, PASSWORD, csrf_of, sign_in

PAGES = ["/console/", "/console/payments", "/console/money", "/console/alerts", "/console/audit",
         "/console/cabinets/cab-a", "/console/payments/cs_test_1", "/console/money/daily.csv",
         "/console/payments.csv", "/console/cabinets/cab-a/qr.svg"]


def https_client(app):
    client = app.test_client()
    client.environ_base["wsgi.url_scheme"] = "https"
    return client


@pytest.mark.parametrize("path", PAGES)
def test_nothing_of_the_console_answers_without_signing_in(console_app, path):
    client = https_client(console_app())
    answer = client.get(path)
    if path.endswith((".csv", ".svg")) and not path.endswith("qr.svg"):
        assert answer.status_code == 401
    else:
        assert answer.status_code in (302, 401)
        if answer.status_code == 302:
            assert answer.headers["Location"].startswith("/console/sign-in")


def test_actions_are_refused_without_signing_in(console_app):
    client = https_client(console_app())
    page = client.get("/console/sign-in").get_data(as_text=True)
    answer = client.post("/console/actions/comp", data={
        "subject": "cab-a", "credits": "1", "reason": "x", "confirmed": "yes",
        "csrf_token": csrf_of(page)})
    assert answer.status_code == 302 and "/console/sign-in" in answer.headers["Location"]


def test_sign_in_sets_a_hardened_cookie_and_opens_the_fleet(console_app):
    client = https_client(console_app())
    answer = sign_in(client)
    assert answer.status_code == 302 and answer.headers["Location"] == "/console"
    cookie = answer.headers["Set-Cookie"]
    for flag in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/console"):
        assert flag in cookie
    fleet = client.get("/console/")
    assert fleet.status_code == 200 and "Sign out ana" in fleet.get_data(as_text=True)
    assert "frame-ancestors 'none'" in fleet.headers["Content-Security-Policy"]


def test_wrong_password_and_unknown_name_say_the_same(console_app):
    client = https_client(console_app())
    for name, password in ((OPERATOR, "wrong password!"), ("nobody", PASSWORD)):
        answer = sign_in(client, name, password)
        assert answer.status_code == 401
        assert "Wrong name or password." in answer.get_data(as_text=True)


def test_failed_sign_ins_are_limited_per_name(console_app):
    client = https_client(console_app())
    for _ in range(5):
        assert sign_in(client, OPERATOR, "wrong password!").status_code == 401
    answer = sign_in(client)  # even the right password waits now
    assert answer.status_code == 429
    assert "Too many failed sign-ins" in answer.get_data(as_text=True)


def test_a_post_without_the_csrf_token_is_refused(operator_client):
    answer = operator_client.post("/console/actions/comp", data={
        "subject": "cab-a", "credits": "1", "reason": "test", "confirmed": "yes"})
    assert answer.status_code == 400
    assert "security token" in answer.get_data(as_text=True)
    answer = operator_client.post("/console/sign-out")
    assert answer.status_code == 400


def test_sign_out_ends_the_session(operator_client):
    page = operator_client.get("/console/").get_data(as_text=True)
    answer = operator_client.post("/console/sign-out", data={"csrf_token": csrf_of(page)})
    assert answer.status_code == 302
    assert operator_client.get("/console/").status_code == 302


def test_a_removed_operator_is_signed_out_at_the_next_click(operator_client):
    operator_client.application.extensions["arcade"].store.remove_operator(OPERATOR)
    assert operator_client.get("/console/").status_code == 302


def test_operators_from_the_setting_can_sign_in(console_app):
    from api.console.auth import hash_password

    app = console_app(CONSOLE_OPERATORS=f"lambda-op:{hash_password('from the secret')}")
    client = https_client(app)
    assert sign_in(client, "lambda-op", "from the secret").status_code == 302


def test_without_a_secret_key_the_console_is_off_and_says_how(make_app):
    client = make_app().test_client()
    answer = client.get("/console/")
    assert answer.status_code == 503
    assert "CONSOLE_SECRET_KEY" in answer.get_data(as_text=True)
    assert client.get("/status").status_code == 200


def test_next_never_leaves_the_console(console_app):
    client = https_client(console_app())
    page = client.get("/console/sign-in?next=https://evil.example/").get_data(as_text=True)
    answer = client.post("/console/sign-in", data={
        "name": OPERATOR, "password": PASSWORD, "csrf_token": csrf_of(page),
        "next": "//evil.example/"})
    assert answer.headers["Location"] == "/console"
