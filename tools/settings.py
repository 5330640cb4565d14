"""The tools' view of the settings the API reads (`.env`, `.env.local`, environment)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from tools.errors import UserError

if TYPE_CHECKING:
    from api.settings import Settings


def load_env() -> Mapping[str, str]:
    """The environment after `.env`/`.env.local` in the current folder (real variables win)."""
    from api.settings import load_dotenv_files

    load_dotenv_files()
    return os.environ


def run_settings_hint() -> str:
    """For a command run without settings: `make run` keeps them in run/ (sourced by activate)."""
    if Path("run", "activate").is_file():
        return "`make run` wrote its settings here: . run/activate"
    return "with `make run`: . run/activate in its folder first"


def api_settings(starting_api: bool = False) -> Settings:
    """The API's own settings, validated as it validates them: one line naming a bad variable."""
    from api.settings import SettingsError, api_settings_from_env, settings_from_env

    load_env()
    try:
        return api_settings_from_env() if starting_api else settings_from_env()
    except SettingsError as error:
        raise UserError(str(error)) from None


def text(env: Mapping[str, str], name: str, default: str = "") -> str:
    return (env.get(name) or default).strip()


def flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    from api.settings import SettingsError, parse_flag

    try:
        return parse_flag(env, name, default)
    except SettingsError as error:
        raise UserError(str(error)) from None


def integer(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    from api.settings import SettingsError, parse_integer

    try:
        return parse_integer(env, name, default, minimum)
    except SettingsError as error:
        raise UserError(str(error)) from None


def require_machine_id(machine_id: str) -> str:
    from api.machines import is_valid_machine_id

    if not is_valid_machine_id(machine_id):
        raise UserError(f"invalid machine id {machine_id!r}: use 1-64 letters, digits, '_' or '-'")
    return machine_id


# Names the API and the tools read (and the AWS credentials a DynamoDB ledger would use).
SETTING_PREFIXES = (
    "MQTT_", "STRIPE_", "STORE_URL", "CLAIM_", "TEST_CHECKOUT", "MACHINE_", "ARCADE_", "PRICE_ID",
    "ALLOWED_PRICE_IDS", "CENTS_PER_CREDIT", "CREDITS_PER_PURCHASE", "MAX_CREDITS", "PUBLIC_URL",
    "WEBHOOK_TOLERANCE", "AWS_", "OPERATOR_TOKEN", "CURRENCY", "ALLOW_FREE_CREDITS", "RATE_LIMIT_",
    "LINK_CHECK_SECONDS", "TRUSTED_PROXY_HOPS", "REFUND_", "SWEEP_", "INGEST_", "CONSOLE_",
    "ALERT_",
)
NOT_SETTINGS = ("ARCADE_CACHE_DIR",)  # where the host cabinets keep umqtt: no secret


def without_settings(env: Mapping[str, str]) -> dict[str, str]:
    """`env` minus every setting: for processes that need none of them (and no Stripe key)."""
    return {key: value for key, value in env.items()
            if key in NOT_SETTINGS or not key.startswith(SETTING_PREFIXES)}
