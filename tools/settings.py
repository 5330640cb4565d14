"""The tools' view of the settings the API reads (`.env`, `.env.local`, environment)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from tools.errors import UserError

if TYPE_CHECKING:
    from api.settings import Settings


def load_env() -> Mapping[str, str]:
    """The environment after `.env`/`.env.local` in the current folder (real variables win)."""
    from api.settings import load_dotenv_files

    load_dotenv_files()
    return os.environ


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
