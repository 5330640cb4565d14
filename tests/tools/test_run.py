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
