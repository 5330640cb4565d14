# The ESP32 itself: the only module that touches machine, network, sockets for DNS/NTP, select
# and time.ticks_*. Everything else receives this module as `board`; tools/host_board.py is its
# twin on a PC and the tests use a fake with the same functions.
import gc
import random
import select
import socket
import sys
import time

import machine
import network
from micropython import const

STATE_DIR = ""  # journal and ids live next to config.json on the board's flash
CONFIG_PATH = "config.json"
_CLOCK_VALID_YEAR = const(2025)  # the RTC reads 2000-01-01 after power-on until NTP sets it
_NTP_TO_2000 = 3155673600  # seconds from 1900 (NTP) to 2000
_NTP_MIN = 3913056000  # 2024-01-01 as NTP seconds: older answers have wrapped (2036)

_relay = None
_relay_active = 1
_inputs = {}
_wlan = None
_wifi_since = None
# Game over, counted by a hard pin interrupt (no allocation in it): active level, debounce_ms,
# ticks of the last active edge, 1 while active, whole pulses counted.
_go = [0, 50, 0, 0, 0]


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
    if "gameover" in cfg:
        _go[0] = 0 if cfg["gameover"]["active_low"] else 1
        _go[1] = cfg["gameover"]["debounce_ms"]
        pin = _inputs["gameover"]
        pin.irq(_gameover_edge, machine.Pin.IRQ_RISING | machine.Pin.IRQ_FALLING, hard=True)


def _input_pin(pin, active_low):
    if pin >= 34:  # input-only pins have no pull resistors: wire an external one
        return machine.Pin(pin, machine.Pin.IN)
    pull = machine.Pin.PULL_UP if active_low else machine.Pin.PULL_DOWN
    return machine.Pin(pin, machine.Pin.IN, pull)


def _gameover_edge(pin):
    """Hard IRQ: runs at the edge even while the loop is blocked in a connect."""
    g = _go
    now = time.ticks_ms()
    if pin.value() == g[0]:
        g[2] = now
        g[3] = 1
    elif g[3]:
        g[3] = 0
        if time.ticks_diff(now, g[2]) >= g[1]:
            g[4] += 1


def relay(on):
    if _relay is not None:  # before setup() boot.py has left it a high-impedance input
        _relay.value(_relay_active if on else 1 - _relay_active)


def gameover_level():
    return _inputs["gameover"].value()


def gameover_pulses():
    return _go[4]


def lockout_level():
    return _inputs["lockout"].value()


# --- time ---------------------------------------------------------------------------------
ticks_ms = time.ticks_ms
ticks_diff = time.ticks_diff
ticks_add = time.ticks_add
sleep_ms = time.sleep_ms


def utc_now():
    return time.gmtime()  # 2000-01-01 until NTP has set the clock (see link.py)


def clock_valid():
    return time.gmtime()[0] >= _CLOCK_VALID_YEAR


def set_clock(address, timeout_ms):
    """Ask the NTP server at address and set the RTC (which mbedtls checks certificates
    against). The caller resolved the name in a pass of its own: no DNS here."""
    query = bytearray(48)
    query[0] = 0x23  # version 4, client
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.settimeout(timeout_ms / 1000)
        sock.sendto(query, address)
        reply = sock.recv(48)
    finally:
        sock.close()
    if len(reply) < 48 or reply[0] & 7 != 4 or not reply[1]:
        raise OSError("not an NTP answer")
    ntp = int.from_bytes(reply[40:44], "big")
    if ntp < _NTP_MIN:
        ntp += 0x100000000
    t = time.gmtime(ntp - _NTP_TO_2000 + _EPOCH_OFFSET)
    machine.RTC().datetime((t[0], t[1], t[2], t[6] + 1, t[3], t[4], t[5], 0))


# time.gmtime() counts from 2000 on the ESP32 (and from 1970 on the unix port).
_EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 1970 else 0


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
        return True
    if _wifi_since is None or time.ticks_diff(now, _wifi_since) > wifi["timeout_s"] * 1000:
        try:
            _wlan.disconnect()
        except OSError:
            pass
        _wlan.connect(wifi["ssid"], wifi["password"])
        _wifi_since = now
    return False


def resolve(host, port):
    """DNS (blocking, bounded by lwIP's resolver): called in a loop pass of its own."""
    return socket.getaddrinfo(host, port)[0][-1]


def tls_context(ca_file, host):
    """Built once per boot: the CA (PEM or DER) is parsed here, so a missing or broken file
    raises here, where link.py reports it, and not inside a connect."""
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
