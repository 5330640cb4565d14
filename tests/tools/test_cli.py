"""The command line as a whole: every command explains itself, and mistakes cost one line."""

from __future__ import annotations

import re

import pytest

from tests.tools.conftest import REPO, arcade_process
from tools.cli import COMMANDS, cli

MY_COMMANDS = ["provision", "flash", "console", "files", "publish", "monitor", "qr", "pay"]


def all_command_paths() -> list[list[str]]:
    """Every command and subcommand, as argument lists (["publish", "coinpulse"], …)."""
    import click

    paths = []
    for name in sorted(COMMANDS):
        command = cli.get_command(click.Context(cli), name)
        paths.append([name])
        if isinstance(command, click.Group):
            paths += [[name, sub] for sub in command.list_commands(click.Context(command))]
    return paths


def test_the_tools_are_registered():
    assert set(MY_COMMANDS) <= set(COMMANDS)


@pytest.mark.parametrize("path", all_command_paths(), ids=" ".join)
def test_every_command_has_help_with_an_example(arcade, path):
    result = arcade(*path, "--help")

    assert result.exit_code == 0, result.output
    assert f"arcade {' '.join(path)}" in result.output.split("Example")[-1]
    assert "Example" in result.output
    # Like every command-line tool: what to type (Options) first, then examples.
    assert result.output.index("Options:") < result.output.index("Example")


@pytest.mark.parametrize("name", MY_COMMANDS)
def test_every_tool_is_documented(name):
    text = (REPO / "docs" / "tools.md").read_text()
    readme = (REPO / "README.md").read_text()
    walkthrough = readme.split("## From bare board to first credit")[1].split("\n## ")[0]

    assert f"## `arcade {name}" in text
    if name not in ("console", "files"):  # debugging aids, not steps to a first credit
        assert re.search(rf"\$ arcade {name}\b", walkthrough)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["provision", "cab/1", "--ssid", "w"], "error: invalid machine id 'cab/1'"),
        (["publish", "coinpulse", "cab+"], "error: invalid machine id 'cab+'"),
        (["publish", "coinpulse", "cab-a", "--credits", "21"],
         "error: --credits 21 is above the cabinets' limit of 20 per message"),
        (["monitor", "#"], "error: invalid machine id '#'"),
        (["qr", "cab-a", "--out", "x.gif", "--url", "https://x"], "error: --out must end in"),
        (["pay", "cab-a"], "error: STRIPE_WEBHOOK_SECRET is not set"),
        (["qr", "cab-a", "--url", "https://buy.stripe.com/test_x", "--out", "x.png"],
         "error: https://buy.stripe.com/test_x is a test link"),
        (["flash", "--port", "auto", "--firmware", "nothing.bin"],
         "error: firmware image not found: nothing.bin"),
        (["console", "--port", "/dev/nothing-here"], "error: no board at /dev/nothing-here"),
        (["files", "--port", "/dev/nothing-here"], "error: no board at /dev/nothing-here"),
        (["ledger", "--machine", "a/b"], "error: invalid machine id 'a/b'"),
    ],
)
def test_user_mistakes_give_one_line_and_exit_code_2(arcade, args, message):
    result = arcade(*args)

    assert result.exit_code == 2
    assert len(result.output.splitlines()) == 1, result.output
    assert result.output.startswith(message)


def test_a_mistake_in_a_real_process_is_one_line_on_stderr(tmp_path):
    process = arcade_process(["publish", "gameover", "no/such"], {}, tmp_path)
    out, err = process.communicate(timeout=30)

    assert process.returncode == 2
    assert out == ""
    assert err == "error: invalid machine id 'no/such': use 1-64 letters, digits, '_' or '-'\n"


def test_a_wrong_option_is_a_usage_error_without_traceback(arcade):
    result = arcade("publish", "coinpulse", "cab-a", "--credits", "zero")

    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert result.output.splitlines()[-1].startswith("Error: Invalid value for '--credits'")


def test_the_group_help_shows_options_then_an_example(arcade):
    result = arcade("--help")

    assert result.exit_code == 0, result.output
    assert result.output.index("Options:") < result.output.index("Example:")
    assert "arcade run" in result.output.split("Example:")[1]
