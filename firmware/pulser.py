# Drives the relay from the journal, one pulse at a time, never blocking.
#
# Power-cut bound: a pulse is recorded as delivered only after the relay has opened again. A cut
# at any instant therefore repeats at most the one pulse in flight and never skips one:
# delivered >= paid and <= paid + 1 per message. We chose that side because a paid credit must
# never be lost; an occasional extra pulse after a power cut is the cheaper mistake.
#
# Repeat cap: a reset that recurs between closing the relay and recording the pulse (a relay coil
# browning the supply out, a flash that fails in pulsed()) would repeat that pulse on every boot.
# journal.start() counts the boots that started a pulse of a message without recording one; at
# journal.MAX_STARTS the message is held: no more pulses at all until an operator releases it.
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
        self._entry = None  # the message whose pulse train is under way

    @property
    def relay_on(self):
        return self._state == _ON

    def mid_train(self, locked):
        """True inside one message's pulse train: nothing that may block runs until it ends.
        Between two messages' trains (and while the game's lockout holds one) the loop may talk
        to the broker."""
        return self._state == _ON or (self._entry is not None and not locked)

    def poll(self, now, locked, hold=False):
        """Advance the relay; returns ms until the next deadline (or -1 when nothing is due).
        locked: the game refuses coins; hold: no new train yet (acks to send first)."""
        if self._state != _IDLE:
            left = self._board.ticks_diff(self._until, now)
            if left > 0:
                return left
            if self._state == _ON:
                return self._release(now, locked)
            self._state = _IDLE
        if self._entry is None and hold:
            return -1
        return self._start_next(now, locked)

    def _release(self, now, locked):
        self._board.relay(False)
        self._state = _GAP
        self._until = self._board.ticks_add(now, self._gap_ms)
        entry = self._entry
        if locked:
            # The game locked its coin input while the relay was closed: it may have ignored
            # this pulse, so it does not count and is given again after the lockout.
            self._events("not_counted", entry)
        else:
            self._journal.pulsed(entry)
        if not entry.pulsing():
            self._entry = None  # nothing of a paid message stays referenced from here
            self._events("paid", entry)
        return self._board.ticks_diff(self._until, self._board.ticks_ms())

    def _start_next(self, now, locked):
        if locked:
            return -1
        entry = self._entry or self._journal.next_to_pulse()
        if entry is None:
            return -1
        if not self._journal.start(entry):
            self._entry = None
            self._events("held", entry)
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
