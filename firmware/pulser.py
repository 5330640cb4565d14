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
# journal's _MAX_STARTS the message is held: no more pulses at all until an operator releases it.


class Pulser:
    def __init__(self, board, journal, relay, events):
        self._board = board
        self._journal = journal
        self.pulse_ms = relay["pulse_ms"]
        self.gap_ms = relay["gap_ms"]
        self._events = events
        self.relay_on = False
        # Relay closed: when it opens. Open: no new pulse before then. None: nothing due.
        self._until = None
        self._entry = None  # the message whose pulse train is under way

    def mid_train(self, locked):
        """True inside one message's pulse train: nothing that may block runs until it ends.
        Between two messages' trains (and while the game's lockout holds one) the loop may talk
        to the broker."""
        return self.relay_on or (self._entry is not None and not locked)

    def poll(self, now, locked, hold=False):
        """Advance the relay; returns ms until the next deadline (or -1 when nothing is due).
        locked: the game refuses coins; hold: no new train yet (acks to send first)."""
        board = self._board
        if self._until is not None:
            left = board.ticks_diff(self._until, now)
            if left > 0:
                return left
            if self.relay_on:
                return self._release(now, locked)
            self._until = None
        if self._entry is None and hold or locked:
            return -1
        entry = self._entry or self._journal.next_to_pulse()
        if entry is None:
            return -1
        if not self._journal.start(entry):
            self._entry = None
            self._events("held", entry)
            return -1
        self._entry = entry
        self.relay_on = True
        board.relay(True)
        self._until = board.ticks_add(board.ticks_ms(), self.pulse_ms)
        self._events("pulse", entry)
        return self.pulse_ms

    def _release(self, now, locked):
        board = self._board
        board.relay(False)
        self.relay_on = False
        self._until = board.ticks_add(now, self.gap_ms)
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
        return board.ticks_diff(self._until, board.ticks_ms())

    def stop(self):
        """Open the relay now (shutdown or error); the pulse is not recorded, so it repeats."""
        self._board.relay(False)
        self.relay_on = False
        self._until = None
