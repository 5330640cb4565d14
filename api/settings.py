"""Settings: read once from the environment (and `.env` / `.env.local`), validated at start."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


class SettingsError(ValueError):
    """A setting is missing or wrong; the message names the variable."""


def load_dotenv_files(directory: Path | None = None) -> None:
    """Load `.env` then `.env.local` into os.environ; real environment variables win."""
    from dotenv import dotenv_values

    directory = directory or Path.cwd()
    merged: dict[str, str] = {}
    for name in (".env", ".env.local"):
        path = directory / name
        if path.is_file():
            merged.update({k: v for k, v in dotenv_values(path).items() if v is not None})
    for key, value in merged.items():
        os.environ.setdefault(key, value)


def _text(env: Mapping[str, str], name: str, default: str = "") -> str:
    return str(env.get(name, default) or default).strip()


def parse_integer(
    env: Mapping[str, str], name: str, default: int | None, minimum: int = 0
) -> int | None:
    raw = _text(env, name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def parse_flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = _text(env, name).lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in _text(env, name).split(",") if item.strip())


@dataclass(frozen=True)
class MqttSettings:
    """The broker part (MQTT_*): the API and the tools (`arcade publish`, `monitor`, `simulate`)."""

    host: str
    port: int = 1883
    username: str = ""
    password: str = field(default="", repr=False)
    tls: bool = False
    ca_cert: str = ""
    prefix: str = "arcade"
    timeout: float = 5.0


def mqtt_settings_from_env(
    env: Mapping[str, str], missing_hint: str = "see README: Settings"
) -> MqttSettings:
    """Build and validate the MQTT_* settings; raises SettingsError naming the first bad one."""
    host = _text(env, "MQTT_BROKER")
    if not host:
        raise SettingsError(f"MQTT_BROKER is not set ({missing_hint})")
    tls = parse_flag(env, "MQTT_TLS")
    ca_cert = _text(env, "MQTT_CA_CERT")
    if ca_cert and not Path(ca_cert).is_file():
        raise SettingsError(f"MQTT_CA_CERT points to {ca_cert!r}, which is not a file")
    return MqttSettings(
        host=host,
        port=parse_integer(env, "MQTT_PORT", 8883 if tls else 1883, minimum=1),
        username=_text(env, "MQTT_USERNAME"),
        password=_text(env, "MQTT_PASSWORD"),
        tls=tls,
        ca_cert=ca_cert,
        prefix=topic_prefix_from_env(env),
        timeout=parse_integer(env, "MQTT_PUBLISH_TIMEOUT_MS", 5000, minimum=100) / 1000,
    )


@dataclass(frozen=True)
class Settings:
    stripe_webhook_secrets: tuple[str, ...] = field(repr=False)
    mqtt_broker: str
    stripe_api_key: str = field(default="", repr=False)
    price_id: str = ""
    mqtt_port: int = 1883
    mqtt_username: str = ""
    mqtt_password: str = field(default="", repr=False)
    mqtt_tls: bool = False
    mqtt_ca_cert: str = ""
    mqtt_topic_prefix: str = "arcade"
    mqtt_publish_timeout: float = 5.0
    store_url: str = "sqlite:///arcade.db"
    stripe_api_base: str = ""
    cents_per_credit: int = 100
    credits_per_purchase: int | None = None
    allowed_price_ids: tuple[str, ...] = ()
    machine_ids: tuple[str, ...] = ()
    machine_token_secret: str = field(default="", repr=False)
    max_credits_per_message: int = 20
    claim_lease_seconds: int = 60
    webhook_tolerance_seconds: int = 300
    test_checkout: bool = False
    public_url: str = ""
    # --- operators' console and alerts (README: Console) ---
    console_secret_key: str = field(default="", repr=False)
    console_operators: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    console_cookie_secure: bool = True
    timezone: str = "UTC"
    alert_webhook_url: str = field(default="", repr=False)
    alert_webhook_topic: str = ""
    alert_offline_minutes: int = 10
    security: SecuritySettings = field(default_factory=lambda: SecuritySettings())
    # --- delivery truth and refunds (issue 10) ---
    refund_undelivered_after_s: int = 180  # the deadline; 0 = never refund, only report
    refund_grace_s: int = 60
    sweep_interval_s: int = 10
    ingest_token: str = field(default="", repr=False)
    stripe_livemode: bool = False

    def price_allowed(self, price_id: str) -> bool:
        return price_id == self.price_id or price_id in self.allowed_price_ids

    def machine_allowed(self, machine_id: str) -> bool:
        return not self.machine_ids or machine_id in self.machine_ids


def settings_from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Build and validate Settings; raises SettingsError naming the first bad variable."""
    env = os.environ if env is None else env
    secrets = _list(env, "STRIPE_WEBHOOK_SECRET")
    if not secrets:
        raise SettingsError("STRIPE_WEBHOOK_SECRET is not set (see README: Settings)")
    store_url = _text(env, "STORE_URL", "sqlite:///arcade.db")
    if not store_url.startswith(("sqlite:///", "dynamodb://")):
        raise SettingsError(
            f"STORE_URL must start with sqlite:/// or dynamodb://, got {store_url!r}"
        )
    mqtt = mqtt_settings_from_env(env)
    test_checkout = parse_flag(env, "TEST_CHECKOUT")
    api_key = _text(env, "STRIPE_API_KEY")
    public_url = _text(env, "PUBLIC_URL").rstrip("/")
    delivery = delivery_settings_from_env(env, api_key)
    lease = parse_integer(env, "CLAIM_LEASE_SECONDS", 60, minimum=1)
    # A publish may take a connect and a PUBACK wait, each up to the timeout, plus ledger writes:
    # a lease shorter than that could pass to a retry while this worker still publishes.
    shortest = math.ceil(2 * mqtt.timeout) + 5
    if lease < shortest:
        raise SettingsError(
            f"CLAIM_LEASE_SECONDS must be at least {shortest} (twice MQTT_PUBLISH_TIMEOUT_MS"
            f" plus 5 s, the longest a publish can take), got {lease}"
        )
    return Settings(
        stripe_webhook_secrets=secrets,
        mqtt_broker=mqtt.host,
        stripe_api_key=api_key,
        price_id=_text(env, "PRICE_ID"),
        mqtt_port=mqtt.port,
        mqtt_username=mqtt.username,
        mqtt_password=mqtt.password,
        mqtt_tls=mqtt.tls,
        mqtt_ca_cert=mqtt.ca_cert,
        mqtt_topic_prefix=mqtt.prefix,
        mqtt_publish_timeout=mqtt.timeout,
        store_url=store_url,
        stripe_api_base=_text(env, "STRIPE_API_BASE"),
        cents_per_credit=parse_integer(env, "CENTS_PER_CREDIT", 100, minimum=1),
        credits_per_purchase=parse_integer(env, "CREDITS_PER_PURCHASE", None, minimum=1),
        allowed_price_ids=_list(env, "ALLOWED_PRICE_IDS"),
        machine_ids=_list(env, "MACHINE_IDS"),
        machine_token_secret=_text(env, "MACHINE_TOKEN_SECRET"),
        max_credits_per_message=parse_integer(env, "MAX_CREDITS_PER_MESSAGE", 20, minimum=1),
        claim_lease_seconds=lease,
        webhook_tolerance_seconds=parse_integer(env, "WEBHOOK_TOLERANCE_SECONDS", 300, minimum=1),
        test_checkout=test_checkout,
        public_url=public_url,
        security=security_settings_from_env(env),
        **delivery,
        **console_settings_from_env(env),
    )


# --- Security: who may do what, how often, and what a payment may credit ----------------------

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class SecuritySettings:
    operator_token: str = field(default="", repr=False)
    currency: str = "usd"
    allow_free_credits: bool = False
    test_checkout_networks: tuple[str, ...] = ()  # besides loopback
    rate_limit_per_client: str = "60 per minute"
    rate_limit_per_cabinet: str = "10 per minute"
    link_check_seconds: int = 300
    trusted_proxy_hops: int = 0


def topic_prefix_from_env(env: Mapping[str, str]) -> str:
    from api.machines import topic_prefix_problem

    prefix = _text(env, "MQTT_TOPIC_PREFIX", "arcade")
    problem = topic_prefix_problem(prefix)
    if problem:
        raise SettingsError(f"MQTT_TOPIC_PREFIX {problem}")
    return prefix


def _rate_limit(env: Mapping[str, str], name: str, default: str) -> str:
    raw = _text(env, name)
    if not raw:
        return default
    if raw.lower() == "off":
        return ""
    from limits import parse_many  # imported only for a value the operator wrote

    try:
        parse_many(raw)
    except ValueError:
        message = f"{name} must look like '60 per minute' or 'off', got {raw!r}"
        raise SettingsError(message) from None
    return raw


def _networks(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    import ipaddress

    networks = []
    for item in _list(env, name):
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            message = f"{name} must be networks like 192.168.1.0/24, got {item!r}"
            raise SettingsError(message) from None
    return tuple(networks)


def is_loopback_host(host: str) -> bool:
    import ipaddress

    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def api_settings_from_env(env: Mapping[str, str] | None = None) -> Settings:
    """The settings the API starts with: also refuses an unsafe test checkout (the tools that only
    read the ledger or the broker need not care where the test page would be served)."""
    settings = settings_from_env(env)
    if settings.test_checkout:
        check_test_checkout(
            settings.stripe_api_key, settings.public_url, settings.security.test_checkout_networks
        )
    return settings


def check_test_checkout(api_key: str, public_url: str, networks: tuple[str, ...]) -> None:
    """Test checkout credits for free: only where no one else can reach it, by explicit choice."""
    from urllib.parse import urlsplit

    if api_key:
        raise SettingsError(
            "TEST_CHECKOUT=true needs STRIPE_API_KEY unset: the test page pays for free, so it "
            "never runs beside a Stripe account"
        )
    if not public_url:
        raise SettingsError(
            "TEST_CHECKOUT=true needs PUBLIC_URL (e.g. http://127.0.0.1:5000): the test links "
            "are built from it, never from a request's Host header"
        )
    parts = urlsplit(public_url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path:
        raise SettingsError(f"PUBLIC_URL must look like http://host:port, got {public_url!r}")
    if not is_loopback_host(parts.hostname) and not networks:
        raise SettingsError(
            f"TEST_CHECKOUT=true with PUBLIC_URL={public_url} lets others reach the free test "
            "page: set TEST_CHECKOUT_NETWORK to the network allowed to use it "
            "(e.g. 192.168.1.0/24), or use a loopback PUBLIC_URL"
        )


def security_settings_from_env(env: Mapping[str, str]) -> SecuritySettings:
    networks = _networks(env, "TEST_CHECKOUT_NETWORK")
    currency = _text(env, "CURRENCY", SecuritySettings.currency).lower()
    if not (len(currency) == 3 and currency.isascii() and currency.isalpha()):
        raise SettingsError(f"CURRENCY must be a 3-letter ISO code such as usd, got {currency!r}")
    return SecuritySettings(
        operator_token=_text(env, "OPERATOR_TOKEN"),
        currency=currency,
        allow_free_credits=parse_flag(env, "ALLOW_FREE_CREDITS"),
        test_checkout_networks=networks,
        rate_limit_per_client=_rate_limit(
            env, "RATE_LIMIT_PER_CLIENT", SecuritySettings.rate_limit_per_client
        ),
        rate_limit_per_cabinet=_rate_limit(
            env, "RATE_LIMIT_PER_CABINET", SecuritySettings.rate_limit_per_cabinet
        ),
        link_check_seconds=parse_integer(
            env, "LINK_CHECK_SECONDS", SecuritySettings.link_check_seconds, minimum=0
        ),
        trusted_proxy_hops=parse_integer(env, "TRUSTED_PROXY_HOPS", 0, minimum=0),
    )


# --- operators' console and alerts ---------------------------------------------------------------
OPERATOR_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-@")


def parse_operators(raw: str) -> tuple[tuple[str, str], ...]:
    """CONSOLE_OPERATORS: `name:$argon2id$…` pairs separated by spaces (what `arcade operator
    add NAME --print` prints), for deployments whose operators live in a setting (Lambda)."""
    operators = []
    for entry in raw.split():
        name, _, password_hash = entry.partition(":")
        if not name or set(name) - OPERATOR_NAME_CHARS or not password_hash.startswith("$argon2"):
            raise SettingsError(
                "CONSOLE_OPERATORS must be `name:$argon2id$...` pairs separated by spaces"
                " (arcade operator add NAME --print)"
            )
        operators.append((name, password_hash))
    return tuple(operators)


def console_settings_from_env(env: Mapping[str, str]) -> dict:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    timezone = _text(env, "ARCADE_TIMEZONE", "UTC")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(
            f"ARCADE_TIMEZONE must be a time zone name such as Europe/Berlin, got {timezone!r}"
        ) from None
    secret_key = _text(env, "CONSOLE_SECRET_KEY")
    if secret_key and len(secret_key) < 32:
        raise SettingsError("CONSOLE_SECRET_KEY must be at least 32 characters (a random string)")
    alert_url = _text(env, "ALERT_WEBHOOK_URL")
    if alert_url and not alert_url.startswith(("https://", "http://")):
        raise SettingsError(f"ALERT_WEBHOOK_URL must start with https://, got {alert_url[:30]!r}")
    return {
        "console_secret_key": secret_key,
        "console_operators": parse_operators(_text(env, "CONSOLE_OPERATORS")),
        "console_cookie_secure": parse_flag(env, "CONSOLE_COOKIE_SECURE", True),
        "timezone": timezone,
        "alert_webhook_url": alert_url,
        "alert_webhook_topic": _text(env, "ALERT_WEBHOOK_TOPIC"),
        "alert_offline_minutes": parse_integer(env, "ALERT_OFFLINE_MINUTES", 10, minimum=0),
    }


# --- delivery truth and refunds (issue 10) --------------------------------------------------------
def delivery_settings_from_env(env: Mapping[str, str], api_key: str) -> dict[str, object]:
    """REFUND_UNDELIVERED_AFTER_S, REFUND_GRACE_S, SWEEP_INTERVAL_S, INGEST_TOKEN and
    STRIPE_LIVEMODE (default: the API key's mode), as Settings fields."""
    live_key = api_key.startswith(("sk_live_", "rk_live_"))
    livemode = parse_flag(env, "STRIPE_LIVEMODE", live_key)
    if api_key and livemode != live_key:
        raise SettingsError(
            f"STRIPE_LIVEMODE is {str(livemode).lower()} but STRIPE_API_KEY is a"
            f" {'live' if live_key else 'test'} key"
        )
    return {
        "refund_undelivered_after_s": parse_integer(env, "REFUND_UNDELIVERED_AFTER_S", 180),
        "refund_grace_s": parse_integer(env, "REFUND_GRACE_S", 60),
        "sweep_interval_s": parse_integer(env, "SWEEP_INTERVAL_S", 10, minimum=1),
        "ingest_token": _text(env, "INGEST_TOKEN"),
        "stripe_livemode": livemode,
    }
