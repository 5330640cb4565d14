"""`arcade run`'s generated stack: the pieces it starts agree with each other."""

from __future__ import annotations

import json

import pytest

from api.settings import settings_from_env
from tools.run import Stack
from tools.run_files import api_environment, local_secrets, write_cabinet_configs


def test_the_api_publishes_where_the_generated_cabinets_listen_whatever_dotenv_says(tmp_path):
    # A .env written for a real site; its values reach the API's process (run adds its own).
    dotenv = {"MQTT_TOPIC_PREFIX": "shop1", "MAX_CREDITS_PER_MESSAGE": "50"}
    stack = Stack(tmp_path, ["demo-1"], "127.0.0.1", 5000, 1883)
    known = local_secrets(tmp_path, stack.machines)

    api = settings_from_env({**dotenv, **api_environment(stack, known, dotenv)})
    [config_path] = write_cabinet_configs(stack, known).values()
    cabinet = json.loads(config_path.read_text())

    # Else the broker's ACL (made for the cabinets' prefix) drops the coinpulse after its PUBACK,
    # or the cabinet ignores a message above its limit: a paid credit lost either way.
    assert api.mqtt_topic_prefix == cabinet["mqtt"]["topic_prefix"]
    assert api.max_credits_per_message <= cabinet["max_credits_per_message"]


def test_damaged_secrets_file_is_one_clear_line(tmp_path):
    from tools.errors import UserError

    (tmp_path / "secrets.json").write_text("{not json")
    with pytest.raises(UserError, match="secrets.json is damaged: delete it"):
        local_secrets(tmp_path, ["demo-1"])


def run_command(*args: str):
    from click.testing import CliRunner

    from tools.cli import cli

    return CliRunner().invoke(cli, ["run", *args], prog_name="arcade")


def test_a_taken_api_port_is_named_with_the_flag_before_anything_starts(tmp_path):
    import os
    import socket

    from tools.broker import free_port

    with socket.socket() as other:  # another program already serving on the API's port
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        result = run_command("--dir", str(tmp_path / "run"), "--port", str(port),
                             "--mqtt-port", str(free_port()))

    assert result.exit_code == 2
    assert result.output.startswith(f"error: port {port} is already in use by ")
    assert f"(pid {os.getpid()})" in result.output
    assert 'choose another port with --port (make run RUN_ARGS="--port ' in result.output
    assert not (tmp_path / "run" / "mosquitto").exists()  # nothing was started


def test_one_arcade_run_per_folder(tmp_path):
    from tools.run import lock_run_folder

    held = lock_run_folder(tmp_path)
    try:
        result = run_command("--dir", str(tmp_path))
    finally:
        held.close()

    assert result.exit_code == 2
    assert result.output.startswith("error: another `arcade run` (pid ")
    assert "stop it first (Ctrl-C in its terminal), or give this one another --dir" in \
        result.output


def test_the_tools_settings_hold_no_stripe_key_and_activate_puts_arcade_on_path(tmp_path):
    import subprocess
    import sysconfig

    from tools.run_files import api_environment, tool_settings, write_tool_settings

    dotenv = {"STRIPE_API_KEY": "sk_test_secret", "STRIPE_WEBHOOK_SECRET": "whsec_real"}
    stack = Stack(tmp_path, ["machine_123"], "127.0.0.1", 5000, 1883)
    known = local_secrets(tmp_path, stack.machines)
    api_env = api_environment(stack, known, dotenv)
    write_tool_settings(stack, tool_settings(stack, api_env, known, dotenv))

    assert "sk_test_secret" not in (tmp_path / "arcade.env").read_text()
    for name in ("arcade.env", "activate"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600
    shell = subprocess.run(
        ["bash", "-c", ". ./activate && command -v arcade && echo $STRIPE_WEBHOOK_SECRET "
                       "$MQTT_MONITOR_USERNAME $ARCADE_API_URL"],
        cwd=tmp_path, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.split() == [f"{sysconfig.get_path('scripts')}/arcade", "whsec_real",
                                    "monitor", "http://127.0.0.1:5000"]


def test_children_other_than_the_api_get_no_setting():
    from tools.settings import without_settings

    env = {"PATH": "/bin", "HOME": "/root", "STRIPE_API_KEY": "sk", "MQTT_PASSWORD": "pw",
           "AWS_SECRET_ACCESS_KEY": "a", "ARCADE_CACHE_DIR": "/c", "ARCADE_API_URL": "u"}
    assert without_settings(env) == {"PATH": "/bin", "HOME": "/root", "ARCADE_CACHE_DIR": "/c"}
