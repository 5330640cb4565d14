# Stand-in for the ESP32's `machine` (Pin, WDT, RTC, reset) on the MicroPython unix port, for the
# real-MicroPython test lane (tests/firmware/real_board.py). Only the board's own hardware is
# faked; everything else the firmware uses is the unix port's real module.
#
# It reports to the test harness on stdout, one line each, starting with "@":
#   @PIN <gpio> <OUT|IN> <level|-> <ticks_ms>   a pin was configured or an output changed level
#   @WDT <timeout_ms> / @WDT-RESET               watchdog armed / it fired (the process dies)
#   @WDT-GAP <ms>                                 a new longest time between two feeds (> 500 ms)
#   @HEAP <alloc> <free>                          gc.mem_alloc()/mem_free() after gc.collect(),
#                                                 at the end of a loop pass (the watchdog feed)
#   @RESET / @BROWNOUT / @RTC <y> <m> <d> <h> <mi> <s>
# and reads commands on stdin: "PIN <gpio> <level>" sets an input's level (firing its irq);
# "PULSE <gpio> <level> <ms> <after_ms>" holds that level for ms, starting after_ms from now;
# "HEAP" asks for a heap figure at the next feed (STANDIN_HEAP_AT_FIRST_FEED=1: at the first).
# Environment: STANDIN_BROWNOUT=<gpio>:<level> kills the process when that output reaches that
# level (a relay coil that browns the supply out); FAKETIME_TIMESTAMP_FILE (libfaketime) is
# where RTC.datetime() sets the clock, as the ESP32's RTC sets the time mbedtls checks.
import _thread
import gc
import os
import select
import sys
import time

import micropython

_GPIO_COUNT = 40
_levels = bytearray(b"\x01" * _GPIO_COUNT)  # input levels the harness sets (idle high)
_irqs = [None] * _GPIO_COUNT
_wdt = [0, 0, 500]  # timeout_ms (0: not armed), ticks of the last feed, longest gap reported
_heap = [1 if os.getenv("STANDIN_HEAP_AT_FIRST_FEED") else 0]  # heap figures asked for


def _say(text):
    sys.stdout.write(text + "\n")


def _die(why):
    _say(why)
    # A board stops at once: no finally, no atexit. SIGKILL to ourselves does exactly that.
    os.system("kill -9 $PPID")
    while True:
        time.sleep(1)


def _brownout():
    spec = os.getenv("STANDIN_BROWNOUT")
    if not spec:
        return None
    pin, level = spec.split(":")
    return int(pin), int(level)


_BROWNOUT = _brownout()


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, gpio, mode=-1, pull=-1, value=None):
        if not 0 <= gpio < _GPIO_COUNT or gpio in (20, 24, 28, 29, 30, 31):
            raise ValueError("invalid pin")
        self._gpio = gpio
        self._mode = mode
        self._out = 0
        if mode == Pin.OUT:
            if gpio >= 34:
                raise ValueError("pin can only be input")
            if value is not None:
                self._out = 1 if value else 0
            _say("@PIN %d OUT %d %d" % (gpio, self._out, time.ticks_ms()))
            self._check_brownout()
        elif mode == Pin.IN:
            _say("@PIN %d IN - %d" % (gpio, time.ticks_ms()))

    def value(self, level=None):
        if level is None:
            if self._mode == Pin.OUT:
                return self._out
            return _levels[self._gpio]
        level = 1 if level else 0
        if self._mode == Pin.OUT and level != self._out:
            self._out = level
            _say("@PIN %d OUT %d %d" % (self._gpio, level, time.ticks_ms()))
            self._check_brownout()

    def __call__(self, level=None):
        return self.value(level)

    def irq(self, handler=None, trigger=3, hard=False):
        _irqs[self._gpio] = (handler, trigger, self, hard)

    def _check_brownout(self):
        if _BROWNOUT is not None and _BROWNOUT == (self._gpio, self._out):
            _die("@BROWNOUT")


class WDT:
    def __init__(self, id=0, timeout=5000):
        if timeout < 1000:
            raise ValueError("WDT timeout too short")
        _wdt[1] = time.ticks_ms()
        _wdt[0] = timeout
        _say("@WDT %d" % timeout)

    def feed(self):
        if _heap[0]:
            _heap[0] = 0
            gc.collect()  # the end of a pass: only the loop's own state is referenced
            _say("@HEAP %d %d" % (gc.mem_alloc(), gc.mem_free()))
        now = time.ticks_ms()
        gap = time.ticks_diff(now, _wdt[1])
        _wdt[1] = now
        if gap > _wdt[2]:
            _wdt[2] = gap
            _say("@WDT-GAP %d" % gap)


def _set_clock(seconds):
    path = os.getenv("FAKETIME_TIMESTAMP_FILE")
    if not path:
        return  # the host's clock is already right
    with open(path) as f:
        offset = int(f.read().strip() or "0")
    real = time.time() - offset
    with open(path, "w") as f:
        f.write("%+d\n" % int(seconds - real))


class RTC:
    def datetime(self, t=None):
        if t is None:
            now = time.gmtime()
            return (now[0], now[1], now[2], now[6] + 1, now[3], now[4], now[5], 0)
        _say("@RTC %d %d %d %d %d %d" % (t[0], t[1], t[2], t[4], t[5], t[6]))
        _set_clock(time.mktime((t[0], t[1], t[2], t[4], t[5], t[6], 0, 0)))


def reset():
    _die("@RESET")


def unique_id():
    return b"\x24\x0a\xc4\x00\x00\x01"


_timed = []  # [ticks due, gpio, level] of PULSE commands


def _command(line):
    parts = line.split()
    if len(parts) == 3 and parts[0] == "PIN":
        _set_level(int(parts[1]), int(parts[2]))
    elif parts == ["HEAP"]:
        _heap[0] = 1
    elif len(parts) == 5 and parts[0] == "PULSE":
        gpio, level, ms, after = [int(p) for p in parts[1:]]
        start = time.ticks_add(time.ticks_ms(), after)
        _timed.append([start, gpio, level])
        _timed.append([time.ticks_add(start, ms), gpio, 1 - level])


def _set_level(gpio, level):
    old = _levels[gpio]
    _levels[gpio] = level
    irq = _irqs[gpio]
    if irq is None or irq[0] is None or level == old:
        return
    edge = Pin.IRQ_RISING if level else Pin.IRQ_FALLING
    if irq[1] & edge:
        if irq[3]:  # hard: runs at the edge, whatever the main program is doing
            irq[0](irq[2])
        else:
            micropython.schedule(irq[0], irq[2])


def _service():
    """Stdin commands and the watchdog, in a thread: like the hardware, they go on while the
    main program is blocked in a socket call."""
    poll = select.poll()
    poll.register(sys.stdin, select.POLLIN)
    reading = True
    while True:
        now = time.ticks_ms()
        while _timed and time.ticks_diff(now, _timed[0][0]) >= 0:
            _, gpio, level = _timed.pop(0)
            _set_level(gpio, level)
        if reading:
            for _ in poll.ipoll(5 if _timed else 20):
                line = sys.stdin.readline()
                if not line:
                    poll.unregister(sys.stdin)
                    reading = False
                else:
                    _command(line)
        else:
            time.sleep_ms(20)
        if _wdt[0] and time.ticks_diff(time.ticks_ms(), _wdt[1]) > _wdt[0]:
            _die("@WDT-RESET")


_thread.start_new_thread(_service, ())
