# The ESP32 itself: the only module that touches machine, network, select and time.ticks_*.
# Everything else receives this module as `board`; tools/host_board.py is its twin on a PC and
# the tests use a fake with the same functions.
import gc
import random
import select
import sys
import time

import machine
import network

STATE_DIR = ""  # journal and recent ids live next to config.json on the board's flash
CONFIG_PATH = "config.json"

_relay = None
_relay_active = 1
_inputs = {}
_wlan = None
_wifi_since = None


def setup(cfg):
    """Claim the pins named in the (validated) config; the relay starts open."""
    global _relay, _relay_active
    relay = cfg["relay"]
    _relay_active = 1 if relay["active_high"] else 0
    # value= sets the level before the pin becomes an output: no glitch on the coin line.
    _relay = machine.Pin(relay["pin"], machine.Pin.OUT, value=1 - _relay_active)
    for name in ("gameover", "lockout"):
        if name in cfg:
            _inputs[name] = _input_pin(cfg[name]["pin"], cfg[name]["active_low"])


def _input_pin(pin, active_low):
    if pin >= 34:  # input-only pins have no pull resistors: wire an external one
        return machine.Pin(pin, machine.Pin.IN)
    pull = machine.Pin.PULL_UP if active_low else machine.Pin.PULL_DOWN
    return machine.Pin(pin, machine.Pin.IN, pull)


def relay(on):
    if _relay is not None:  # before setup() boot.py has already driven it open
        _relay.value(_relay_active if on else 1 - _relay_active)


def gameover_level():
    return _inputs["gameover"].value()


def lockout_level():
    return _inputs["lockout"].value()


# --- time ---------------------------------------------------------------------------------
ticks_ms = time.ticks_ms
ticks_diff = time.ticks_diff
ticks_add = time.ticks_add
sleep_ms = time.sleep_ms


def utc_now():
    return time.gmtime()  # 2000-01-01 until NTP has set the clock (see wifi_ready)


def random_bits():
    return random.getrandbits(32)


# --- health ---------------------------------------------------------------------------------
class _NoWatchdog:
    def feed(self):
        pass


def watchdog(timeout_ms):
    try:
        return machine.WDT(timeout=timeout_ms)
    except (ValueError, OSError):
        return _NoWatchdog()


def free_mem():
    return gc.mem_free()


def rssi():
    try:
        return _wlan.status("rssi")
    except Exception:
        return None


def reset():
    machine.reset()


def print_exception(e):
    sys.print_exception(e)


def event(kind, fields):
    """The serial console is our log: one line per event, visible with `mpremote`."""
    print("[%9.3f] %s %s" % (time.ticks_ms() / 1000, kind, fields))


def started(loop):
    pass


# --- network ----------------------------------------------------------------------------------
def wifi_ready(wifi, now):
    """Non-blocking: True once associated; (re)starts the association after timeout_s."""
    global _wlan, _wifi_since
    if _wlan is None:
        _wlan = network.WLAN(network.STA_IF)
        _wlan.active(True)
    if _wlan.isconnected():
        if _wifi_since is not None:
            _wifi_since = None
            event("wifi", {"ip": _wlan.ifconfig()[0]})
            _set_clock()
        return True
    if _wifi_since is None or time.ticks_diff(now, _wifi_since) > wifi["timeout_s"] * 1000:
        try:
            _wlan.disconnect()
        except OSError:
            pass
        _wlan.connect(wifi["ssid"], wifi["password"])
        _wifi_since = now
    return False


def _set_clock():
    try:
        import ntptime

        ntptime.timeout = 2  # bounded: well below the watchdog
        ntptime.settime()
    except Exception as e:
        event("ntp_failed", {"error": repr(e)})


def tls_context(ca_file, host):
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=ca_file)
    return ctx



def readable(sock):
    """A poll object watching one socket (plain or TLS: both are pollable streams) for bytes to
    read; link.py makes one per connection and hands it to every wait_readable()."""
    poll = select.poll()
    poll.register(sock, select.POLLIN)
    return poll


def wait_readable(poll, ms):
    """At most ms; True as soon as the socket is readable (or closed, or failed). ipoll() yields
    a tuple the poll object owns: a wait allocates nothing."""
    for _ in poll.ipoll(ms):
        return True
    return False
