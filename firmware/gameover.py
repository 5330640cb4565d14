# Debounced inputs: the game-over signal (reported with a minimum interval) and the coin lockout.
from micropython import const

_MAX_QUEUED = const(16)  # game-over reports kept while offline; the oldest go first


class Debounced:
    """A level that counts only once it has held for debounce_ms; reads the input it is given.

    instant_on: the active level counts at once (debounced only on the way out). The coin
    lockout is read this way: a pulse must never go into a game that has just locked out.
    """

    def __init__(self, board, read_level, active_low, debounce_ms, instant_on=False):
        self._board = board
        self._read = read_level
        self._active_level = 0 if active_low else 1
        self._debounce_ms = debounce_ms
        self._instant_on = instant_on
        self.active = self._raw()  # what the input shows at boot is the start, not an edge
        self._changed_at = None

    def _raw(self):
        return self._read() == self._active_level

    def poll(self, now):
        """Returns True when the debounced level has just turned active."""
        raw = self._raw()
        if raw == self.active:
            self._changed_at = None
            return False
        if raw and self._instant_on:
            self.active = True
            self._changed_at = None
            return True
        if self._changed_at is None:
            self._changed_at = now
            return False
        if self._board.ticks_diff(now, self._changed_at) < self._debounce_ms:
            return False
        self.active = raw
        self._changed_at = None
        return raw


class GameOverReporter:
    """Turns debounced game-over edges into reports, at most one per min_interval_ms.

    Besides the polled level it reads latched(): the number of whole active pulses (at least
    debounce_ms long) the board's pin interrupt has counted. A pulse that came and went while
    the loop was blocked (a connect) is reported from there; one the poll saw is not counted
    twice (it ends while the debounced level is still active).
    """

    def __init__(self, board, read_level, cfg, latched=None):
        self._board = board
        self._input = Debounced(board, read_level, cfg["active_low"], cfg["debounce_ms"])
        self._latched = latched
        self._latched_seen = latched() if latched is not None else 0
        self._min_interval_ms = cfg["min_interval_ms"]
        self._last_report = None
        self.queue = []  # report ids not yet published (bounded)
        self.dropped = 0

    def poll(self, now):
        """True when a new report was queued."""
        last = self._last_report
        if last is not None and self._board.ticks_diff(now, last) >= self._min_interval_ms:
            # Forget it once it no longer matters: ticks wrap every 2**30 ms (12.4 days) on the
            # ESP32, and a report 6.2 days old would otherwise look like one from the future.
            self._last_report = last = None
        was_active = self._input.active
        edge = self._input.poll(now)
        if self._latched is not None:
            count = self._latched()
            if count != self._latched_seen:
                self._latched_seen = count
                if not was_active and not self._input.active:
                    edge = True  # a whole pulse while we were not looking
        if not edge:
            return False
        if last is not None:
            return False
        self._last_report = now
        if len(self.queue) >= _MAX_QUEUED:
            self.queue.pop(0)
            self.dropped += 1
        self.queue.append("go-%08x" % self._board.random_bits())
        return True
