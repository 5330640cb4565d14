# Drives the relay from the journal, one pulse at a time, never blocking.
#
# Power-cut bound: a pulse is recorded as delivered only after the relay has opened again. A cut
# at any instant therefore repeats at most the one pulse in flight and never skips one:
# delivered >= paid and <= paid + 1 per message. We chose that side because a paid credit must
# never be lost; an occasional extra pulse after a power cut is the cheaper mistake.
_IDLE = 0
_ON = 1  # relay closed until _until
_GAP = 2  # relay open; no new pulse before _until


class Pulser:
    def __init__(self, board, journal, relay_cfg, events):
        self._board = board
        self._journal = journal
        self._pulse_ms = relay_cfg["pulse_ms"]
        self._gap_ms = relay_cfg["gap_ms"]
        self._events = events
        self._state = _IDLE
        self._until = 0
        self._entry = None

    @property
    def relay_on(self):
        return self._state == _ON

    def busy(self, locked):
        """True while a pulse train runs (network calls that may block must wait)."""
        if self._state == _ON:
            return True
        return not locked and self._journal.next_to_pulse() is not None

    def poll(self, now, locked):
        """Advance the relay; returns ms until the next deadline (or -1 when nothing is due)."""
        if self._state != _IDLE:
            left = self._board.ticks_diff(self._until, now)
            if left > 0:
                return left
            if self._state == _ON:
                return self._release(now)
            self._state = _IDLE
        return self._start_next(now, locked)

    def _release(self, now):
        self._board.relay(False)
        self._state = _GAP
        self._until = self._board.ticks_add(now, self._gap_ms)
        entry = self._entry
        self._journal.pulsed(entry)
        if not entry.pulsing():
            self._entry = None  # nothing of a paid message stays referenced from here
            self._events("paid", entry)
        return self._board.ticks_diff(self._until, self._board.ticks_ms())

    def _start_next(self, now, locked):
        if locked:
            return -1
        entry = self._journal.next_to_pulse()
        if entry is None:
            return -1
        self._entry = entry
        self._state = _ON
        self._board.relay(True)
        self._until = self._board.ticks_add(self._board.ticks_ms(), self._pulse_ms)
        self._events("pulse", entry)
        return self._pulse_ms

    def stop(self):
        """Open the relay now (shutdown or error); the pulse is not recorded, so it repeats."""
        self._board.relay(False)
        self._state = _IDLE
