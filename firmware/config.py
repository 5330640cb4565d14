# config.json: defaults and validation. Imports on CPython too: `arcade provision` validates the
# config it writes with this very module, so the board and the tools agree on every rule.
import json

CONFIG_FILE = "config.json"
# The oldest MicroPython the firmware runs on: its frozen umqtt.simple (1.6.0) takes an
# SSLContext and checks the broker's certificate and name; 1.22's (1.3.4) did neither.
OLDEST_MICROPYTHON = (1, 25, 0)

# Pins an ESP32 cannot give us safely (the WROOM/WROVER modules this firmware targets).
FLASH_PINS = (6, 7, 8, 9, 10, 11)  # wired to the SPI flash: touching them crashes the chip
STRAPPING_PINS = (0, 2, 5, 12, 15)  # sampled at reset: a signal here can stop boot or glitch
UART0_PINS = (1, 3)  # the USB console (TX, RX): the boot ROM drives them
PULLED_UP_AT_RESET = (14,)  # JTAG TMS: a weak pull-up from reset until boot.py (see docs)
INPUT_ONLY_PINS = (34, 35, 36, 37, 38, 39)  # no output driver, no internal pull resistors
MAX_GPIO = 39

DEFAULTS = {
    "machine_id": None,
    "wifi": {"ssid": None, "password": "", "timeout_s": 20},
    "mqtt": {
        "host": None,
        "port": None,  # None: 8883 with TLS, 1883 without
        "user": None,
        "password": None,
        "tls": False,
        "ca_file": None,
        "keepalive": 30,
        "topic_prefix": "arcade",
        "timeout_s": 5,
        "backoff_max_s": 30,
    },
    "relay": {
        "pin": 26,
        "active_high": True,
        "pulse_ms": 100,
        "gap_ms": 200,
        "pulses_per_credit": 1,
    },
    "gameover": {"pin": 27, "active_low": True, "debounce_ms": 50, "min_interval_ms": 2000},
    "lockout": {"pin": 25, "active_low": True, "debounce_ms": 50},
    "max_credits_per_message": 20,
    "require_id": False,
    "ntp_server": "pool.ntp.org",
    "status_interval_s": 60,
    "watchdog_s": 30,
}

# Sections that exist only when the config names them (the inputs are optional wiring).
OPTIONAL_SECTIONS = ("gameover", "lockout")
# key -> (low, high) for every integer setting.
INT_RANGES = {
    "wifi.timeout_s": (5, 120),
    "mqtt.port": (1, 65535),
    "mqtt.keepalive": (10, 600),
    "mqtt.timeout_s": (1, 20),
    "mqtt.backoff_max_s": (1, 300),
    "relay.pulse_ms": (20, 2000),
    "relay.gap_ms": (20, 5000),
    "relay.pulses_per_credit": (1, 10),
    "gameover.debounce_ms": (5, 1000),
    "gameover.min_interval_ms": (0, 600000),
    "lockout.debounce_ms": (5, 1000),
    "max_credits_per_message": (1, 100),
    "status_interval_s": (10, 3600),
    "watchdog_s": (10, 120),
}
BOOL_KEYS = ("mqtt.tls", "relay.active_high", "gameover.active_low", "lockout.active_low",
             "require_id")
STRING_KEYS = ("wifi.password", "mqtt.user", "mqtt.password", "mqtt.ca_file")


def runtime_problem(implementation):
    """Why this interpreter cannot run the firmware safely, or None."""
    if implementation.name != "micropython":
        return None  # the host cabinet (arcade simulate) on CPython
    version = tuple(implementation.version[:3])
    if version < OLDEST_MICROPYTHON:
        return ("MicroPython %d.%d.%d is too old: its umqtt.simple cannot check the broker's TLS "
                "certificate. Flash MicroPython 1.25 or newer (1.27 recommended)." % version)
    return None


def with_defaults(cfg):
    """A new dict: cfg over DEFAULTS, section by section; optional sections only when given."""
    out = {}
    for key, default in DEFAULTS.items():
        given = cfg.get(key)
        if isinstance(default, dict):
            if key in OPTIONAL_SECTIONS and given is None:
                continue
            section = dict(default)
            if isinstance(given, dict):
                for sub in given:
                    if not sub.startswith("_"):  # comments stay on flash, not in the board's RAM
                        section[sub] = given[sub]
            out[key] = section
        else:
            out[key] = default if given is None else given
    mqtt = out["mqtt"]
    if mqtt["port"] is None:
        mqtt["port"] = 8883 if mqtt["tls"] is True else 1883
    return out


def validate(cfg):
    """Every problem in cfg as 'key: what is wrong'; an empty list means the board can use it."""
    if not isinstance(cfg, dict):
        return ["config: must be a JSON object"]
    problems = []
    _check_unknown_keys(cfg, problems)
    if not _sections_usable(cfg, problems):
        return problems
    full = with_defaults(cfg)
    _check_machine_id(full.get("machine_id"), problems)
    _check_text(full, "wifi.ssid", problems)
    _check_text(full, "mqtt.host", problems)
    _check_topic_prefix(full["mqtt"]["topic_prefix"], problems)
    for key in INT_RANGES:
        _check_int(full, key, problems)
    for key in BOOL_KEYS:
        if _get(full, key) is not _MISSING and not isinstance(_get(full, key), bool):
            problems.append(key + ": must be true or false")
    for key in STRING_KEYS:
        value = _get(full, key)
        if value is not _MISSING and value is not None and not isinstance(value, str):
            problems.append(key + ": must be a string")
    _check_text(full, "ntp_server", problems)
    mqtt = full["mqtt"]
    if mqtt["tls"] is True and not mqtt["ca_file"]:
        problems.append("mqtt.ca_file: required when mqtt.tls is true (the board has no CA store)")
    if bool(mqtt["user"]) != bool(mqtt["password"]):
        problems.append("mqtt.password: give both mqtt.user and mqtt.password, or neither")
    _check_watchdog(full, problems)
    _check_pins(full, problems)
    return problems


def load(path=CONFIG_FILE):
    """(config with defaults, []) or (None, problems) for the file at path."""
    try:
        with open(path) as f:
            cfg = json.load(f)
    except OSError:
        return None, [path + ": not found (copy config.json onto the board)"]
    except ValueError as e:
        return None, [path + ": not valid JSON (" + str(e) + ")"]
    except MemoryError:
        return None, [path + ": too large for the board's memory"]
    problems = validate(cfg)
    if problems:
        return None, problems
    return with_defaults(cfg), []


_MISSING = object()


def _get(cfg, dotted):
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _check_unknown_keys(cfg, problems):
    # A misspelt key would silently fall back to its default: say so instead.
    for key in cfg:
        if key.startswith("_"):
            continue
        if key not in DEFAULTS:
            problems.append(key + ": unknown key")
        elif isinstance(DEFAULTS[key], dict) and isinstance(cfg[key], dict):
            for sub in cfg[key]:
                if not sub.startswith("_") and sub not in DEFAULTS[key]:
                    problems.append(key + "." + sub + ": unknown key")


def _sections_usable(cfg, problems):
    ok = True
    for key in ("wifi", "mqtt"):
        if key not in cfg:
            problems.append(key + ": missing")
            ok = False
    for key, default in DEFAULTS.items():
        if isinstance(default, dict) and key in cfg and not isinstance(cfg[key], dict):
            problems.append(key + ": must be an object")
            ok = False
    return ok


def _check_text(cfg, key, problems):
    value = _get(cfg, key)
    if not isinstance(value, str) or not value:
        problems.append(key + ": must be a non-empty string")


def _check_machine_id(value, problems):
    ok = isinstance(value, str) and 1 <= len(value) <= 64
    if ok:
        for ch in value:
            if not (ch.isalpha() or ch.isdigit() or ch in "_-") or ord(ch) > 127:
                ok = False
                break
    if not ok:
        problems.append("machine_id: must be 1-64 characters of A-Z a-z 0-9 _ -")


def _check_topic_prefix(value, problems):
    if not isinstance(value, str) or not value or "+" in value or "#" in value:
        problems.append("mqtt.topic_prefix: must be a non-empty string without + or #")


def _check_int(cfg, key, problems):
    value = _get(cfg, key)
    if value is _MISSING:
        return
    low, high = INT_RANGES[key]
    if type(value) is not int or not low <= value <= high:
        problems.append("%s: must be an integer from %d to %d" % (key, low, high))


def _check_watchdog(cfg, problems):
    # The longest pass of the loop is a connect: TCP, the TLS handshake and the CONNACK, each
    # read bounded by mqtt.timeout_s (about 4 of them). The watchdog must outlast it.
    timeout = _get(cfg, "mqtt.timeout_s")
    watchdog = _get(cfg, "watchdog_s")
    if type(timeout) is int and type(watchdog) is int and watchdog < 4 * timeout + 10:
        problems.append("watchdog_s: must be at least 4 x mqtt.timeout_s + 10 (%d): a connect "
                        "may take that long" % (4 * timeout + 10))


def _check_pins(cfg, problems):
    used = {}
    for section in ("relay", "gameover", "lockout"):
        if section not in cfg:
            continue
        key = section + ".pin"
        pin = cfg[section]["pin"]
        if type(pin) is not int or not 0 <= pin <= MAX_GPIO:
            problems.append(key + ": must be an integer GPIO number (0-39)")
            continue
        reason = _pin_problem(pin, section == "relay")
        if reason:
            problems.append("%s: GPIO %d %s" % (key, pin, reason))
        elif pin in used:
            problems.append("%s: GPIO %d is already used by %s" % (key, pin, used[pin]))
        used[pin] = key


def _pin_problem(pin, is_output):
    if pin in FLASH_PINS:
        return "is wired to the flash chip (6-11)"
    if pin in UART0_PINS:
        return "is the USB console's serial line (1 = TX, 3 = RX)"
    if pin in STRAPPING_PINS:
        return "is a strapping pin (0, 2, 5, 12, 15): a reset could glitch it"
    if is_output and pin in PULLED_UP_AT_RESET:
        return "is pulled high from reset until the firmware runs (JTAG): it could close the relay"
    if is_output and pin in INPUT_ONLY_PINS:
        return "is input-only (34-39) and cannot drive a relay"
    if pin in (20, 24, 28, 29, 30, 31):
        return "does not exist on the ESP32"
    return None
