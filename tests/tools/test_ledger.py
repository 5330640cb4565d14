"""`arcade ledger`: the operator's answer to "they paid but got no credit: where is it?"."""

from __future__ import annotations

import time

from click.testing import CliRunner

from api.store import Cabinet, Payment, State
from api.store_sqlite import SQLiteStore
from tools.cli import cli


def ledger_at(tmp_path):
    store = SQLiteStore(str(tmp_path / "arcade.db"))
    now = time.time()
    for session_id, machine_id, state in [
        ("cs_acked", "cab-a", State.ACKED),
        ("cs_stuck", "cab-a", State.PUBLISHED),
        ("cs_other", "cab-b", State.PUBLISHED),
    ]:
        store.claim(Payment(session_id, machine_id, 2, 200, "usd"), "t", now, 60)
        store.mark_published(session_id, "t", now)
        if state == State.ACKED:
            store.mark(session_id, State.ACKED, now)
    store.cabinet_seen(Cabinet("cab-a", "offline", now, "1.0.0", 2))
    return f"sqlite:///{tmp_path / 'arcade.db'}"


def run(tmp_path, *args, store_url):
    return CliRunner().invoke(cli, ["ledger", *args], env={"STORE_URL": store_url})


def test_ledger_lists_payments_and_cabinets(tmp_path):
    result = run(tmp_path, store_url=ledger_at(tmp_path))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any("cs_acked" in line and "acked" in line and "2.00 USD" in line for line in lines)
    assert any("cs_stuck" in line and "published" in line for line in lines)
    assert any(line.startswith("cab-a") and "offline" in line for line in lines)


def test_undelivered_for_one_machine(tmp_path):
    result = run(tmp_path, "--machine", "cab-a", "--undelivered", store_url=ledger_at(tmp_path))
    assert result.exit_code == 0, result.output
    assert "cs_stuck" in result.output
    assert "cs_acked" not in result.output and "cs_other" not in result.output


def test_missing_ledger_is_one_clear_line(tmp_path):
    result = run(tmp_path, store_url=f"sqlite:///{tmp_path / 'nothing.db'}")
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
