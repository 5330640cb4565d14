"""`arcade operator`: accounts in the ledger, or a CONSOLE_OPERATORS entry."""

from __future__ import annotations

from click.testing import CliRunner

from api.settings import parse_operators
from api.store_sqlite import SQLiteStore
from tools.cli import cli


def run(tmp_path, monkeypatch, *args, stdin=None):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STORE_URL", f"sqlite:///{tmp_path / 'arcade.db'}")
    monkeypatch.delenv("CONSOLE_OPERATORS", raising=False)
    return CliRunner().invoke(cli, ["operator", *args], input=stdin)


def test_add_stores_an_argon2id_hash_that_verifies(tmp_path, monkeypatch):
    from argon2 import PasswordHasher

    result = run(tmp_path, monkeypatch, "add", "ana", stdin="a long password\na long password\n")
    assert result.exit_code == 0, result.output
    stored = SQLiteStore(str(tmp_path / "arcade.db")).operator_hash("ana")
    assert stored.startswith("$argon2id$") and "a long password" not in stored
    assert PasswordHasher().verify(stored, "a long password")
    listed = run(tmp_path, monkeypatch, "list")
    assert listed.output.startswith("ana  (ledger, added ")
    assert run(tmp_path, monkeypatch, "remove", "ana").exit_code == 0
    again = run(tmp_path, monkeypatch, "remove", "ana")
    assert again.exit_code != 0 and "no operator ana" in again.output


def test_print_gives_a_setting_entry_and_writes_nothing(tmp_path, monkeypatch):
    result = run(tmp_path, monkeypatch, "add", "ops@venue", "--print", "--password-stdin",
                 stdin="another long one\n")
    assert result.exit_code == 0, result.output
    line = result.output.splitlines()[0]
    [(name, password_hash)] = parse_operators(line)
    assert name == "ops@venue" and password_hash.startswith("$argon2id$")
    assert SQLiteStore(str(tmp_path / "arcade.db")).operators() == []


def test_short_passwords_and_bad_names_are_one_line_errors(tmp_path, monkeypatch):
    short = run(tmp_path, monkeypatch, "add", "ana", "--password-stdin", stdin="short\n")
    assert short.exit_code != 0 and "at least 10 characters" in short.output
    bad = run(tmp_path, monkeypatch, "add", "a b", "--password-stdin", stdin="long enough pw\n")
    assert bad.exit_code != 0 and "invalid operator name" in bad.output
