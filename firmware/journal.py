# The credit journal on flash: every accepted coinpulse until its `done` ack is out, the pulses
# already delivered for it, and how often a pulse of it was started without being recorded.
#
# - journal.dat holds at most _MAX_ENTRIES messages (they are in RAM too); replaced atomically
#   (write a temp file, os.rename), so a power cut leaves the old or the new version.
# - A backlog beyond that (a broker delivering 1,000 queued coinpulses) waits on flash in
#   inbox<n>.dat, appended one line per message before its PUBACK; journal.dat's first line says
#   how far it has been taken in. RAM stays bounded whatever the backlog; flash bounds the backlog.
# - The ids seen are in ids.bin (ids.py), so a repeat is dropped long after its entry left.
import json
import os

import ids
from micropython import const

JOURNAL = "journal.dat"
END = "end\n"  # last line of a complete file: a truncated temp file is never trusted
_MAX_ENTRIES = const(32)
MAX_STARTS = const(3)  # a pulse started this often without being recorded: the entry is held
_HELD = const(1)
_EEXIST = const(17)


class Entry:
    def __init__(self, seq, credit_id, credits, total, done, starts=0, flags=0):
        self.seq = seq
        self.credit_id = credit_id
        self.credits = credits
        self.total = total  # pulses owed: credits * pulses_per_credit
        self.done = done  # pulses delivered and recorded
        self.starts = starts  # boots that started a pulse of it which was then not recorded
        self.flags = flags
        self.told = False  # `received` ack sent (RAM only: after a reboot it is sent again)
        self.armed = False  # a start of it is already counted in this boot

    def pulsing(self):
        return self.done < self.total

    @property
    def held(self):
        return self.flags & _HELD


class Journal:
    def __init__(self, directory, capacity=2048):
        self._dir = directory
        self.ids = ids.IdStore(self.path(ids.IDS), capacity)
        self.recent_problem = None  # why recovery.load() set the old id list aside, if it did
        self.entries = []
        self.next_seq = 1
        self.inbox_gen = 0
        self.inbox_pos = 0  # bytes of the inbox already taken into the journal
        self.inbox_told = 0  # bytes of the inbox whose `received` ack is out (RAM only)
        self.inbox_waiting = 0  # lines in the inbox not yet taken in
        self.inbox_credits = 0  # their credits
        self.inbox_end = 0  # the inbox's size in bytes
        self._found = None  # (digest, slot) of the last state_of() scan

    def path(self, name):
        return self._dir + "/" + name if self._dir else name

    def inbox(self, gen=None):
        return self.path("inbox%d.dat" % (self.inbox_gen if gen is None else gen))

    # --- reading ---------------------------------------------------------------------------
    def reset(self):
        self.entries = []
        self.next_seq = 1
        self.inbox_gen = self.inbox_pos = self.inbox_told = self.inbox_end = 0
        self.inbox_waiting = self.inbox_credits = 0

    def state_of(self, credit_id, now_s=None):
        """What the cabinet knows of credit_id: ids.RECEIVED, DONE, EXPIRED, or 0 (new)."""
        for entry in self.entries:
            if entry.credit_id == credit_id:
                return ids.RECEIVED if entry.pulsing() else ids.DONE
        d = ids.digest(credit_id)
        slot, state = self.ids.find(d, now_s)
        self._found = (d, slot)  # add() / remember() right after reuse the scan
        if state == ids.RECEIVED and not self._in_inbox(credit_id):
            return 0  # a cut between remembering it and journaling it: it was never taken
        return state

    def _in_inbox(self, credit_id):
        if not self.inbox_waiting:
            return False
        with open(self.inbox()) as f:
            f.seek(self.inbox_pos)
            for line in f:
                if parse_inbox(line)[0] == credit_id:
                    return True
        return False

    def remember(self, credit_id, state, until, now_s=None):
        d = ids.digest(credit_id)
        found = self._found
        self._found = None
        if found is not None and found[0] == d:
            slot = found[1]
        else:
            slot = self.ids.find(d, now_s)[0]
        self.ids.put(d, state, until, slot)

    def next_to_pulse(self):
        for entry in self.entries:
            if entry.pulsing():
                return None if entry.held else entry
        return None

    def held(self):
        for entry in self.entries:
            if entry.held:
                return entry
        return None

    def next_to_ack(self):
        for entry in self.entries:
            if not entry.pulsing():
                return entry
        return None

    def pending_credits(self):
        """Credits paid for but not yet fully pulsed (the inbox's included)."""
        owed = 0
        for entry in self.entries:
            if entry.pulsing():
                per_credit = entry.total // entry.credits
                owed += entry.credits - entry.done // per_credit
        return owed + self.inbox_credits

    def inbox_untold(self):
        return self.inbox_waiting and max(self.inbox_told, self.inbox_pos) < self.inbox_end

    def next_inbox_to_tell(self):
        """(credit_id, credits) of the oldest inbox line whose `received` ack is not out, and
        the offset after it (for told()); None when there is none."""
        at = max(self.inbox_told, self.inbox_pos)
        if not self.inbox_waiting or at >= self.inbox_end:
            return None
        with open(self.inbox()) as f:
            f.seek(at)
            line = f.readline()
            if not line.endswith("\n"):
                return None
            credit_id, credits = parse_inbox(line)
            return credit_id, credits, f.tell()

    # --- writing ---------------------------------------------------------------------------
    def add(self, credit_id, credits, pulses_per_credit, until=ids.FOREVER, now_s=None):
        """Record a paid message durably; the caller may PUBACK only after this returns.

        The id is remembered first: a cut before the credit is written leaves a `received` record
        that state_of() sees through (the message was not PUBACKed and comes again).
        """
        if credit_id is not None:
            self.remember(credit_id, ids.RECEIVED, until, now_s)
        if self.inbox_waiting or len(self.entries) >= _MAX_ENTRIES:
            line = "%d %d %s\n" % (credits, pulses_per_credit, json.dumps(credit_id))
            with open(self.inbox(), "a") as f:
                f.write(line)
            self.inbox_waiting += 1
            self.inbox_credits += credits
            self.inbox_end += len(line.encode())
            return None
        entry = Entry(self.next_seq, credit_id, credits, credits * pulses_per_credit, 0, 1)
        entry.armed = True  # its first start is counted by this very write
        self.entries.append(entry)
        self.next_seq += 1
        try:
            self.save()
        except OSError:
            self.entries.remove(entry)
            self.next_seq -= 1
            raise
        return entry

    def start(self, entry):
        """A pulse of entry is about to close the relay: count it once per boot, so a reset
        between the relay closing and pulsed() cannot repeat it without limit. False: held."""
        if entry.armed:
            return True
        entry.armed = True
        if entry.starts >= MAX_STARTS:
            entry.flags |= _HELD
            self.save()
            return False
        entry.starts += 1
        self.save()
        return True

    def pulsed(self, entry):
        """One more pulse of entry delivered: recorded after the relay opened (see pulser.py)."""
        entry.done += 1
        entry.starts = 0
        self.save()

    def acked(self, entry, now_s=None):
        """Its `done` ack is out: remember it as done, drop it, take the next from the inbox."""
        if entry.credit_id is not None:
            self.ids.set_state(ids.digest(entry.credit_id), ids.DONE, now_s)
        self.entries.remove(entry)
        self.top_up(save=True)

    def top_up(self, save=False):
        """Take inbox lines into the journal while there is room (one atomic journal write)."""
        taken = 0
        if self.inbox_waiting and len(self.entries) < _MAX_ENTRIES:
            with open(self.inbox()) as f:
                f.seek(self.inbox_pos)
                while self.inbox_waiting and len(self.entries) < _MAX_ENTRIES:
                    line = f.readline()
                    if not line.endswith("\n"):
                        break
                    credit_id, credits, per_credit = parse_inbox(line, True)
                    entry = Entry(self.next_seq, credit_id, credits, credits * per_credit, 0)
                    self.inbox_pos = f.tell()
                    entry.told = self.inbox_pos <= self.inbox_told
                    self.entries.append(entry)
                    self.next_seq += 1
                    self.inbox_waiting -= 1
                    self.inbox_credits -= credits
                    taken += 1
        finished = taken and not self.inbox_waiting
        if finished:  # all taken: the next backlog starts a new file
            old = self.inbox()
            self.inbox_gen += 1
            self.inbox_pos = self.inbox_told = self.inbox_end = 0
        if taken or save:
            self.save()
        if finished:
            remove(old)

    def save(self):
        def write(f):
            f.write("v2 %d %d %d\n" % (self.next_seq, self.inbox_gen, self.inbox_pos))
            for e in self.entries:
                f.write("%d %d %d %d %d %d " % (e.seq, e.credits, e.total, e.done, e.starts,
                                                e.flags))
                f.write(json.dumps(e.credit_id))
                f.write("\n")

        replace(self.path(JOURNAL), write)


def parse_inbox(line, full=False):
    credits, per_credit, credit_id = line.split(" ", 2)
    if full:
        return json.loads(credit_id), int(credits), int(per_credit)
    return json.loads(credit_id), int(credits)


def replace(path, write):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        write(f)
        f.write(END)
    try:
        os.rename(tmp, path)
    except OSError as e:
        # FAT cannot rename over a file (EEXIST); littlefs (the ESP32 default) and POSIX can.
        # Any other error leaves the old journal in place: never delete the only good copy.
        if e.args[0] != _EEXIST:
            raise
        os.remove(path)
        os.rename(tmp, path)  # a cut in between: recovery falls back to the temp file



def remove(path):
    try:
        os.remove(path)
    except OSError:
        pass
