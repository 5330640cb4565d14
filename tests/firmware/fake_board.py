# A fake `board` for the firmware's logic, in virtual time. Runs on MicroPython (the WebAssembly
# VM) and on CPython alike, so it uses nothing either lacks.


class PowerCut(BaseException):
    """Raised at a chosen board operation: everything in RAM is gone, flash stays."""


class FakeWatchdog:
    def __init__(self):
        self.fed = 0

    def feed(self):
        self.fed += 1


_TICKS_PERIOD = 1 << 30  # time.ticks_ms() on the ESP32 wraps here (about 12.4 days)
_TICKS_HALF = _TICKS_PERIOD // 2


class FakeBoard:
    """wrap=True: ticks_ms() wraps like the ESP32's (and ticks_diff/ticks_add with it)."""

    def __init__(self, state_dir, config_path="config.json", start_ms=0, wrap=False):
        self.wrap = wrap
        self.STATE_DIR = state_dir
        self.CONFIG_PATH = config_path
        self.now = start_ms
        self.relay_closed = False
        self.edges = []  # [t_ms, closed]
        self.events = []  # [t_ms, kind, fields]
        self.levels = {"gameover": 1, "lockout": 1}
        self.gameover_latched = 0  # whole pulses the pin interrupt counted (see board.py)
        self.year = 2026  # 2000: the RTC before NTP has set it
        self.ops = 0
        self.cut_at = None  # power cut when ops reaches this
        self.sleeps_left = None  # raise PowerCut after this many sleeps (config retry loop)
        self.wdt = FakeWatchdog()
        self._rand = 12345

    def _op(self):
        self.ops += 1
        if self.cut_at is not None and self.ops >= self.cut_at:
            self.cut_at = None
            raise PowerCut()

    # --- pins ----------------------------------------------------------------------------
    def setup(self, cfg):
        self.cfg = cfg

    def relay(self, on):
        self._op()
        if on != self.relay_closed:
            self.relay_closed = on
            self.edges.append([self.now, on])
        self._op()

    def gameover_level(self):
        return self.levels["gameover"]

    def lockout_level(self):
        return self.levels["lockout"]

    def gameover_pulses(self):
        return self.gameover_latched

    # --- time ----------------------------------------------------------------------------
    def ticks_ms(self):
        return self.now % _TICKS_PERIOD if self.wrap else self.now

    def ticks_diff(self, a, b):
        if not self.wrap:
            return a - b
        return (a - b + _TICKS_HALF) % _TICKS_PERIOD - _TICKS_HALF

    def ticks_add(self, a, delta):
        return (a + delta) % _TICKS_PERIOD if self.wrap else a + delta

    def sleep_ms(self, ms):
        self._op()
        if self.sleeps_left is not None:
            if self.sleeps_left == 0:
                raise PowerCut()
            self.sleeps_left -= 1
        self.now += ms

    def utc_now(self):
        s = self.now // 1000
        return (self.year, 11, 27, (s // 3600) % 24, (s // 60) % 60, s % 60)

    def clock_valid(self):
        return self.year >= 2025

    def random_bits(self):
        self._rand = (self._rand * 1103515245 + 12345) & 0x7FFFFFFF
        return self._rand

    # --- health & log ----------------------------------------------------------------------
    def watchdog(self, timeout_ms):
        return self.wdt

    def free_mem(self):
        return 100000

    def rssi(self):
        return -60

    def event(self, kind, fields):
        self._op()
        self.events.append([self.now, kind, fields])

    def started(self, loop):
        pass

    def print_exception(self, e):
        print("exception", repr(e))

    def reset(self):
        raise PowerCut()

    def wifi_ready(self, wifi, now):
        return True

    def tls_context(self, ca_file, host):
        return None


class FakeLink:
    """Stands in for link.Link and the broker: QoS 1 delivery, PUBACK only after the callback
    returned, redelivery of anything not acknowledged (as Mosquitto does for a session).
    `inbox` is on the socket already: wait() ends at once while it holds anything (a readable
    socket ends select.poll); scenarios.py's TimedLink adds messages arriving mid-wait."""

    def __init__(self, board, journal_path):
        self.board = board
        self.journal_path = journal_path
        self.up = True
        self.problem = None
        self._was_up = False
        self.inbox = []  # [topic, payload] waiting for the broker to deliver them
        self.published = []  # [t_ms, topic, payload, retain]
        self.durable_before_puback = []  # per delivery: was the credit in the journal file?
        self.on_message = None
        self.closed = False

    def bind(self, on_message):
        self.on_message = on_message

    def poll(self, now, may_block):
        if not self.up:
            self._was_up = False
            return False
        if not self._was_up:
            if not may_block:
                return False
            self._was_up = True
            return True
        if self.inbox:
            topic, payload = self.inbox[0]
            self.on_message(topic, payload)  # a PowerCut here leaves it in the inbox
            self.durable_before_puback.append(_file_text(self.journal_path))
            self.inbox.pop(0)  # the PUBACK
        return False

    def wait(self, ms):
        """Link.wait in virtual time: ms, or none at all while a message waits."""
        if self._was_up:  # else not connected: the loop sleeps
            self.board.sleep_ms(0 if self.inbox else ms)
        return self._was_up

    def publish(self, topic, payload, retain):
        if not self.up:
            return False
        self.published.append([self.board.now, topic, payload, retain])
        return True

    def close(self, status_topic, payload):
        self.closed = True


def _file_text(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""
