"""`arcade ledger`: the operator's answer to "they paid but got no credit: where is it?"."""

from __future__ import annotations

import time

import pytest
from click.testing import CliRunner

from api.ledger import PartState
from api.store import Cabinet, Heartbeat, Payment, planned
from api.store_sqlite import SQLiteStore
from tools.cli import cli


def ledger_at(tmp_path):
    store = SQLiteStore(str(tmp_path / "arcade.db"))
    now = time.time()
    for session_id, machine_id, done in [
        ("cs_done", "cab-a", True),
        ("cs_stuck", "cab-a", False),
        ("cs_other", "cab-b", False),
    ]:
        store.claim(planned(Payment(session_id, machine_id, 2, 200, "usd"), now=now), "t", now, 60)
        store.published(session_id, "t", {session_id: 0}, now)
        if done:
            store.ack(machine_id, session_id, "done", "", now)
    store.record(Payment("cs_wait", "cab-a", 1, 100, "usd"), now)  # awaiting payment
    store.cabinet_seen(Cabinet("cab-a", "offline", now, "1.0.0", 2, "clock_unset"))
    store.heartbeat(Heartbeat("listener", now - 5, {"connected": True, "recorded": 7}))
    return f"sqlite:///{tmp_path / 'arcade.db'}"


def run(*args, store_url):
    return CliRunner().invoke(cli, ["ledger", *args], env={"STORE_URL": store_url})


def test_ledger_lists_payments_cabinets_and_delivery_health(tmp_path):
    result = run(store_url=ledger_at(tmp_path))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any("cs_done" in line and " done " in line and "2.00 USD" in line for line in lines)
    assert any("cs_stuck" in line and " published " in line and "0/1" in line for line in lines)
    assert any("cs_wait" in line and " pending " in line for line in lines)
    assert any(line.startswith("cab-a") and "offline" in line and "clock_unset" in line
               for line in lines)
    assert any(line.startswith("listener") and " ok " in line and "recorded 7" in line
               for line in lines)


def test_undelivered_for_one_machine(tmp_path):
    result = run("--machine", "cab-a", "--undelivered", store_url=ledger_at(tmp_path))
    assert result.exit_code == 0, result.output
    assert "cs_stuck" in result.output
    for other in ("cs_done", "cs_other", "cs_wait"):
        assert other not in result.output


def test_show_prints_parts_and_timeline(tmp_path):
    result = run("show", "cs_done", store_url=ledger_at(tmp_path))
    assert result.exit_code == 0, result.output
    assert "cs_done" in result.output and "timeline" in result.output
    kinds = [line.split()[2] for line in result.output.split("timeline (UTC)")[1].splitlines()
             if line.strip()]
    assert kinds == ["paid", "published", "done"]


def test_show_an_unknown_payment_is_one_line(tmp_path):
    result = run("show", "cs_nope", store_url=ledger_at(tmp_path))
    assert result.exit_code == 2
    assert result.output.strip() == "error: no payment 'cs_nope' in the ledger"


def test_missing_ledger_is_one_clear_line(tmp_path):
    result = run(store_url=f"sqlite:///{tmp_path / 'nothing.db'}")
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: no ledger at")


def test_missing_ledger_points_to_make_runs_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "activate").write_text("# written by arcade run\n")

    result = CliRunner().invoke(cli, ["ledger"], env={"STORE_URL": None})

    assert result.exit_code == 2
    assert result.output == ("error: no ledger at arcade.db (STORE_URL): has the API run here? "
                             "(`make run` wrote its settings here: . run/activate)\n")


# --- acting on one payment: resend, refund --------------------------------------------------------
@pytest.fixture
def stripe_stub():
    from tests.api.conftest import running_stripe_stub

    with running_stripe_stub() as stub:
        yield stub


@pytest.fixture
def operator(broker, tmp_path, stripe_stub, api_login_env):
    """A ledger with one payment the broker refused (no cabinet subscribed: 0x10), and the
    operator's settings (the API's) to act on it."""
    url = f"sqlite:///{tmp_path / 'arcade.db'}"
    store = SQLiteStore(str(tmp_path / "arcade.db"))
    now = time.time()
    payment = planned(Payment("cs_stuck", "cab-a", 45, 4500, "usd", payment_intent="pi_stuck"),
                      now=now)
    store.claim(payment, "t", now, 60)
    store.published("cs_stuck", "t", {p.id: 0x10 for p in payment.parts}, now)
    env = {**api_login_env, "STORE_URL": url, "STRIPE_WEBHOOK_SECRET": "whsec_x",
           "STRIPE_API_KEY": "sk_test_ops", "STRIPE_API_BASE": stripe_stub.url}
    return store, env


def test_resend_publishes_the_undelivered_parts_again_after_asking(operator, arcade, subscribe):
    store, env = operator
    coins = subscribe("arcade/machine/cab-a/coinpulse")  # the cabinet is provisioned now
    declined = arcade("ledger", "resend", "cs_stuck", env=env, input="n\n")
    assert declined.exit_code == 1 and "Publish cs_stuck:1 (20 credits)" in declined.output
    assert coins.nothing_more() == []
    result = arcade("ledger", "resend", "cs_stuck", env=env, input="y\n")
    assert result.exit_code == 0, result.output
    assert "published: cs_stuck:1 (20 credits), cs_stuck:2 (20 credits)" in result.output
    assert [m.json()["id"] for m in coins.wait_for(3)] == ["cs_stuck:1", "cs_stuck:2",
                                                           "cs_stuck:3"]
    stored = store.get("cs_stuck")
    assert [p.state for p in stored.parts] == ["published"] * 3
    assert stored.events[-1].kind == "operator_resend"


def test_resend_publishes_parts_the_broker_took_but_the_cabinet_never_confirmed(
        operator, arcade, subscribe):
    store, env = operator
    now = time.time()
    store.ack("cab-a", "cs_stuck:1", "done", "", now)
    store.update("cs_stuck", lambda current: (_taken_by_broker(current), None), now)
    coins = subscribe("arcade/machine/cab-a/coinpulse")
    result = arcade("ledger", "resend", "cs_stuck", env=env, input="y\n")
    assert result.exit_code == 0, result.output
    assert "published" in result.output and "duplicate" not in result.output
    assert [m.json()["id"] for m in coins.wait_for(2)] == ["cs_stuck:2", "cs_stuck:3"]
    assert [str(p.state) for p in store.get("cs_stuck").parts] == ["done", "published",
                                                                   "published"]


def _taken_by_broker(payment):
    """The broker took every part (PUBACK 0); the cabinet has said nothing since."""
    for part in payment.parts:
        if str(part.state) != "done":
            part.state, part.reason = PartState.PUBLISHED, ""
    return payment


def test_refund_refunds_the_undelivered_parts_now(operator, arcade, stripe_stub):
    store, env = operator
    store.ack("cab-a", "cs_stuck:1", "done", "", time.time())  # one part got through
    result = arcade("ledger", "refund", "cs_stuck", env=env, input="y\n")
    assert result.exit_code == 0, result.output
    assert "Refund 25.00 USD for 2 undelivered part(s)" in result.output
    calls = stripe_stub.calls("POST", "/v1/refunds")
    assert sorted((c["headers"]["Idempotency-Key"], c["form"]["amount"]) for c in calls) == [
        ("arcade-refund-cs_stuck:2", "2000"),
        ("arcade-refund-cs_stuck:3", "500"),
    ]
    assert [p.state for p in store.get("cs_stuck").parts] == ["done", "refunded", "refunded"]
    again = arcade("ledger", "refund", "cs_stuck", env=env, input="y\n")
    assert again.exit_code == 2 and "nothing to refund" in again.output
    assert len(stripe_stub.calls("POST", "/v1/refunds")) == 2
