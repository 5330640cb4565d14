# Debounced inputs: the game-over signal (reported with a minimum interval) and the coin lockout.
from micropython import const

_MAX_QUEUED = const(16)  # game-over reports kept while offline; the oldest go first


class Debounced:
    """A level that counts only once it has held for debounce_ms; reads the input it is given."""

    def __init__(self, board, read_level, active_low, debounce_ms):
        self._board = board
        self._read = read_level
        self._active_level = 0 if active_low else 1
        self._debounce_ms = debounce_ms
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
        if self._changed_at is None:
            self._changed_at = now
            return False
        if self._board.ticks_diff(now, self._changed_at) < self._debounce_ms:
            return False
        self.active = raw
        self._changed_at = None
        return raw


class GameOverReporter:
    """Turns debounced game-over edges into reports, at most one per min_interval_ms."""

    def __init__(self, board, read_level, cfg):
        self._board = board
        self._input = Debounced(board, read_level, cfg["active_low"], cfg["debounce_ms"])
        self._min_interval_ms = cfg["min_interval_ms"]
        self._last_report = None
        self.queue = []  # report ids not yet published (bounded)
        self.dropped = 0

    def poll(self, now):
        """True when a new report was queued."""
        if not self._input.poll(now):
            return False
        last = self._last_report
        if last is not None and self._board.ticks_diff(now, last) < self._min_interval_ms:
            return False
        self._last_report = now
        if len(self.queue) >= _MAX_QUEUED:
            self.queue.pop(0)
            self.dropped += 1
        self.queue.append("go-%08x" % self._board.random_bits())
        return True
