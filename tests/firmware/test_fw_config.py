"""firmware/config.py as the tools load it (by path, on CPython): DEFAULTS, validate, with_defaults;
and the coinpulse validation fuzzed with hypothesis."""

from __future__ import annotations

import datetime
import importlib.util
import json
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"fw_{name}", FIRMWARE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


config = load("config")


def minimal() -> dict:
    return {"machine_id": "machine_123", "wifi": {"ssid": "arcade"}, "mqtt": {"host": "h"}}


def test_example_config_is_valid_and_documents_every_key():
    example = json.loads((FIRMWARE / "config.example.json").read_text())
    assert config.validate(example) == []
    for key, default in config.DEFAULTS.items():
        assert key in example, key
        if isinstance(default, dict):
            for sub in default:
                assert sub in example[key], f"{key}.{sub}"
                assert sub in example[key]["_doc"], f"{key}.{sub} undocumented"


def test_issue_shape_is_valid():
    cfg = {"machine_id": "machine_123", "wifi": {"ssid": "arcade", "password": "x"},
           "mqtt": {"host": "broker.example.com", "port": 8883, "user": "machine_123",
                    "password": "y", "tls": True, "ca_file": "ca.crt", "keepalive": 30,
                    "topic_prefix": "arcade"},
           "relay": {"pin": 26, "active_high": True, "pulse_ms": 100, "gap_ms": 200,
                     "pulses_per_credit": 1},
           "gameover": {"pin": 27, "active_low": True, "debounce_ms": 50,
                        "min_interval_ms": 2000},
           "lockout": {"pin": 25, "active_low": True},
           "max_credits_per_message": 20, "status_interval_s": 60}
    assert config.validate(cfg) == []


def test_defaults_fill_in_and_optional_inputs_stay_absent():
    full = config.with_defaults(minimal())
    assert full["relay"] == {"pin": 26, "active_high": True, "pulse_ms": 100, "gap_ms": 200,
                             "pulses_per_credit": 1}
    assert full["max_credits_per_message"] == 20
    assert full["mqtt"]["port"] == 1883
    assert "gameover" not in full and "lockout" not in full
    assert config.with_defaults({**minimal(), "mqtt": {"host": "h", "tls": True}})["mqtt"][
        "port"] == 8883
    cfg = minimal()
    config.with_defaults(cfg)
    assert cfg == minimal()  # the input is not modified


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"relay": {"pin": "26"}}, "relay.pin: must be an integer GPIO number (0-39)"),
        ({"relay": {"pin": 40}}, "relay.pin: must be an integer GPIO number (0-39)"),
        ({"relay": {"pin": 12}},
         "relay.pin: GPIO 12 is a strapping pin (0, 2, 5, 12, 15): a reset could glitch it"),
        ({"relay": {"pin": 36}},
         "relay.pin: GPIO 36 is input-only (34-39) and cannot drive a relay"),
        ({"gameover": {"pin": 26}}, "gameover.pin: GPIO 26 is already used by relay.pin"),
        ({"relay": {"pulse_ms": 5}}, "relay.pulse_ms: must be an integer from 20 to 2000"),
        ({"relay": {"active_high": "yes"}}, "relay.active_high: must be true or false"),
        ({"relay": {"pulse": 100}}, "relay.pulse: unknown key"),
        ({"machine_id": "a/b"}, "machine_id: must be 1-64 characters of A-Z a-z 0-9 _ -"),
        ({"machine_id": "é"}, "machine_id: must be 1-64 characters of A-Z a-z 0-9 _ -"),
        ({"mqtt": {"host": "h", "tls": True}},
         "mqtt.ca_file: required when mqtt.tls is true (the board has no CA store)"),
        ({"mqtt": {"host": "h", "topic_prefix": "a/#"}},
         "mqtt.topic_prefix: must be a non-empty string without + or #"),
        ({"max_credits_per_message": 0},
         "max_credits_per_message: must be an integer from 1 to 100"),
        ({"status_interval_s": True}, "status_interval_s: must be an integer from 10 to 3600"),
        ({"wifi": None}, "wifi: must be an object"),
        ({"relay": {"pin": 1}},
         "relay.pin: GPIO 1 is the USB console's serial line (1 = TX, 3 = RX)"),
        ({"lockout": {"pin": 3}},
         "lockout.pin: GPIO 3 is the USB console's serial line (1 = TX, 3 = RX)"),
        ({"relay": {"pin": 14}}, "relay.pin: GPIO 14 is pulled high from reset until the firmware "
         "runs (JTAG): it could close the relay"),
        ({"mqtt": {"host": "h", "user": "u"}},
         "mqtt.password: give both mqtt.user and mqtt.password, or neither"),
        ({"mqtt": {"host": "h", "timeout_s": 10}},
         "watchdog_s: must be at least 4 x mqtt.timeout_s + 10 (50): a connect may take that long"),
        ({"require_id": 1}, "require_id: must be true or false"),
        ({"ntp_server": ""}, "ntp_server: must be a non-empty string"),
    ],
)
def test_each_mistake_is_named(change, problem):
    cfg = minimal()
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    assert problem in config.validate(cfg)


def test_gpio14_is_fine_as_an_input():
    assert config.validate({**minimal(), "gameover": {"pin": 14}}) == []


def test_missing_sections_and_non_objects():
    assert config.validate([]) == ["config: must be a JSON object"]
    assert config.validate({"machine_id": "m"}) == ["wifi: missing", "mqtt: missing"]


def test_comment_keys_are_allowed():
    assert config.validate({**minimal(), "_doc": "x", "relay": {"_doc": "y"}}) == []


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(list(config.DEFAULTS) + ["x", "_c"]),
                       st.none() | st.integers() | st.text() | st.booleans()
                       | st.dictionaries(st.text(max_size=12), st.integers() | st.text())))
def test_validate_never_raises(cfg):
    problems = config.validate(cfg)
    assert isinstance(problems, list) and all(isinstance(p, str) for p in problems)


# --- coinpulse validation, in-process on CPython ------------------------------------------------
sys.modules.setdefault("micropython", type(sys)("micropython"))
sys.modules["micropython"].const = lambda value: value
contract = load("contract")

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)
_times = (st.datetimes(min_value=datetime.datetime(2000, 1, 1),
                        max_value=datetime.datetime(2099, 12, 31))
          .map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")))
_almost_coinpulses = st.fixed_dictionaries(
    {"credits": _json_values | st.integers(-5, 30)},
    optional={"machineId": st.sampled_from(["machine_123", "machine_456", ""]) | _json_values,
              "id": _json_values | st.text(min_size=1, max_size=12), "timestamp": _json_values,
              "expires": _times | _json_values
              | _times.map(lambda t: t.replace("Z", "+00:00"))},
)
_Y2000 = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)


def oracle(payload: bytes) -> tuple | None:
    """What a coinpulse means per docs/protocol.md, written independently of the firmware:
    None (not one: ignored), ("rejected", id) or ("credit", id, credits, expires in seconds
    since 2000 or None)."""
    try:
        msg = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if not isinstance(msg, dict) or len(payload) > 512:
        return None
    credit_id = msg.get("id")
    if credit_id is not None and (not isinstance(credit_id, str) or not 0 < len(credit_id) <= 128):
        return None
    if "machineId" in msg and msg["machineId"] != "machine_123":
        return None
    credits = msg.get("credits")
    expires = msg.get("expires")
    ok = not isinstance(credits, bool) and isinstance(credits, int) and 1 <= credits <= 20
    if ok and expires is not None:
        try:
            if not isinstance(expires, str) or not expires.endswith("Z"):
                raise ValueError(expires)
            when = datetime.datetime.strptime(expires, "%Y-%m-%dT%H:%M:%SZ")
            if when.strftime("%Y-%m-%dT%H:%M:%SZ") != expires:
                raise ValueError(expires)
        except ValueError:
            ok = False
        else:
            expires = int((when.replace(tzinfo=datetime.UTC) - _Y2000).total_seconds())
    if not ok:
        return None if credit_id is None else ("rejected", credit_id)
    return ("credit", credit_id, credits, expires)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=80) | _almost_coinpulses.map(lambda d: json.dumps(d).encode())
       | _json_values.map(lambda v: json.dumps(v).encode()))
def test_coinpulse_validation_matches_the_contract(payload):
    parsed = contract.parse_coinpulse(payload, "machine_123", 20)
    expected = oracle(payload)
    if expected is None:
        assert isinstance(parsed, str)
    elif expected[0] == "rejected":
        assert parsed[0] == expected[1] and isinstance(parsed[3], str)
    else:
        assert parsed == (*expected[1:], None)
