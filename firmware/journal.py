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
RECENT = "recent.dat"  # firmware 1.0 / 1.1's id list: converted into ids.bin once
_END = "end\n"  # last line of a complete file: a truncated temp file is never trusted
_RECENT_V2 = "v2 sha256/96"
_MAX_ENTRIES = const(32)
MAX_STARTS = const(3)  # a pulse started this often without being recorded: the entry is held
_HELD = const(1)
_EEXIST = const(17)


class JournalError(Exception):
    pass


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
        self.recent_problem = None  # why the old id list was set aside by load(), if it was
        self.entries = []
        self._next_seq = 1
        self._inbox_gen = 0
        self._inbox_pos = 0  # bytes of the inbox already taken into the journal
        self.inbox_told = 0  # bytes of the inbox whose `received` ack is out (RAM only)
        self.inbox_waiting = 0  # lines in the inbox not yet taken in
        self.inbox_credits = 0  # their credits
        self.inbox_end = 0  # the inbox's size in bytes
        self._found = None  # (digest, slot) of the last state_of() scan

    def path(self, name):
        return self._dir + "/" + name if self._dir else name

    def _inbox(self, gen=None):
        return self.path("inbox%d.dat" % (self._inbox_gen if gen is None else gen))

    # --- reading ---------------------------------------------------------------------------
    def load(self):
        """Read the journal and the id store; returns the number of messages still owed.

        An unreadable journal raises (the caller sets the files aside). An unreadable id store or
        old id list is renamed *.bad and load goes on: the credits owed are kept.
        """
        self._reset()
        lines = _read_complete(self.path(JOURNAL))
        if lines:
            head = lines[0].split()
            self._next_seq = int(head[1])
            if head[0] == "v2":
                self._inbox_gen, self._inbox_pos = int(head[2]), int(head[3])
            for line in lines[1:]:
                self.entries.append(_parse_entry(line, head[0]))
        self._clean_inboxes()
        self.inbox_told = self._inbox_pos
        self._count_inbox()
        try:
            self.ids.load()
        except (OSError, ValueError) as e:
            self.recent_problem = repr(e)
            _rename(self.path(ids.IDS), self.path(ids.IDS + ".bad"))
            self.ids.load()
        try:
            self._convert_recent()
        except Exception as e:  # ValueError, JournalError, UnicodeError: keep it for a human
            self.recent_problem = repr(e)
            _rename(self.path(RECENT), self.path(RECENT + ".bad"))
        for entry in self.entries:  # a journal older than the id store: remember its ids
            if entry.credit_id is not None:
                d = ids.digest(entry.credit_id)
                slot, state = self.ids.find(d)
                if not state:
                    self.ids.put(d, ids.RECEIVED, ids.FOREVER, slot)
        self.top_up()
        return len(self.entries) + self.inbox_waiting

    def _convert_recent(self):
        """The id list of firmware 1.0 (one JSON id a line) or 1.0.x (hex digests) -> ids.bin."""
        lines = _read_complete(self.path(RECENT))
        if lines is None:
            return
        if lines and lines[0] == _RECENT_V2:
            digests = [bytes.fromhex(line)[:11] for line in lines[1:]]
        else:
            digests = [ids.digest(json.loads(line)) for line in lines]
        for d in digests:
            slot, state = self.ids.find(d)
            if not state:
                self.ids.put(d, ids.DONE, ids.FOREVER, slot)
        os.remove(self.path(RECENT))

    def _clean_inboxes(self):
        for name in os.listdir(self._dir) if self._dir else os.listdir():
            if name.startswith("inbox") and name.endswith(".dat") and (
                    self.path(name) != self._inbox()):
                os.remove(self.path(name))  # consumed before a power cut let us remove it

    def _count_inbox(self):
        """Lines, credits and size of the inbox from where the journal has taken it."""
        self.inbox_waiting = self.inbox_credits = 0
        self.inbox_end = self._inbox_pos
        torn = False
        try:
            with open(self._inbox()) as f:
                f.seek(self._inbox_pos)
                while True:
                    line = f.readline()
                    if not line.endswith("\n"):
                        torn = bool(line)  # cut while appending (FAT): it was not PUBACKed
                        break
                    self.inbox_waiting += 1
                    self.inbox_credits += _parse_inbox(line)[1]
                    self.inbox_end = f.tell()
        except OSError:
            return
        if torn:  # copy the whole lines to a new file, or the next append would join the torn one
            old = self._inbox()
            with open(old) as f, open(self._inbox(self._inbox_gen + 1), "w") as out:
                f.seek(self._inbox_pos)
                for line in f:
                    if line.endswith("\n"):
                        out.write(line)
            self._inbox_gen += 1
            self.inbox_end -= self._inbox_pos
            self._inbox_pos = self.inbox_told = 0
            self._save()
            _remove(old)

    def _reset(self):
        self.entries = []
        self._next_seq = 1
        self._inbox_gen = self._inbox_pos = self.inbox_told = self.inbox_end = 0
        self.inbox_waiting = self.inbox_credits = 0

    def set_aside(self):
        """Rename an unreadable journal to *.bad (for a human to read) and start empty."""
        _rename(self.path(JOURNAL), self.path(JOURNAL + ".bad"))
        self._reset()
        self.ids.load()
        return self.path(JOURNAL + ".bad")

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
        with open(self._inbox()) as f:
            f.seek(self._inbox_pos)
            for line in f:
                if _parse_inbox(line)[0] == credit_id:
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
        return self.inbox_waiting and max(self.inbox_told, self._inbox_pos) < self.inbox_end

    def next_inbox_to_tell(self):
        """(credit_id, credits) of the oldest inbox line whose `received` ack is not out, and
        the offset after it (for told()); None when there is none."""
        at = max(self.inbox_told, self._inbox_pos)
        if not self.inbox_waiting or at >= self.inbox_end:
            return None
        with open(self._inbox()) as f:
            f.seek(at)
            line = f.readline()
            if not line.endswith("\n"):
                return None
            credit_id, credits = _parse_inbox(line)
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
            with open(self._inbox(), "a") as f:
                f.write(line)
            self.inbox_waiting += 1
            self.inbox_credits += credits
            self.inbox_end += len(line.encode())
            return None
        entry = Entry(self._next_seq, credit_id, credits, credits * pulses_per_credit, 0, 1)
        entry.armed = True  # its first start is counted by this very write
        self.entries.append(entry)
        self._next_seq += 1
        try:
            self._save()
        except OSError:
            self.entries.remove(entry)
            self._next_seq -= 1
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
            self._save()
            return False
        entry.starts += 1
        self._save()
        return True

    def pulsed(self, entry):
        """One more pulse of entry delivered: recorded after the relay opened (see pulser.py)."""
        entry.done += 1
        entry.starts = 0
        self._save()

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
            with open(self._inbox()) as f:
                f.seek(self._inbox_pos)
                while self.inbox_waiting and len(self.entries) < _MAX_ENTRIES:
                    line = f.readline()
                    if not line.endswith("\n"):
                        break
                    credit_id, credits, per_credit = _parse_inbox(line, True)
                    entry = Entry(self._next_seq, credit_id, credits, credits * per_credit, 0)
                    self._inbox_pos = f.tell()
                    entry.told = self._inbox_pos <= self.inbox_told
                    self.entries.append(entry)
                    self._next_seq += 1
                    self.inbox_waiting -= 1
                    self.inbox_credits -= credits
                    taken += 1
        finished = taken and not self.inbox_waiting
        if finished:  # all taken: the next backlog starts a new file
            old = self._inbox()
            self._inbox_gen += 1
            self._inbox_pos = self.inbox_told = self.inbox_end = 0
        if taken or save:
            self._save()
        if finished:
            _remove(old)

    def release(self):
        """Held entries pulse again (the operator fixed the cause): see docs/firmware.md."""
        released = []
        for entry in self.entries:
            if entry.held:
                entry.flags &= ~_HELD
                entry.starts = 0
                released.append(entry.credit_id)
        if released:
            self._save()
        return released

    def _save(self):
        def write(f):
            f.write("v2 %d %d %d\n" % (self._next_seq, self._inbox_gen, self._inbox_pos))
            for e in self.entries:
                f.write("%d %d %d %d %d %d " % (e.seq, e.credits, e.total, e.done, e.starts,
                                                e.flags))
                f.write(json.dumps(e.credit_id))
                f.write("\n")

        _replace(self.path(JOURNAL), write)


def release(directory=""):
    """For the operator at the REPL: `import journal; journal.release()` (see docs/firmware.md)."""
    j = Journal(directory)
    j.load()
    released = j.release()
    print("released:", released if released else "nothing was held")
    return released


def _parse_entry(line, version):
    if version == "v1":  # firmware 1.0
        seq, credits, total, done, credit_id = line.split(" ", 4)
        return Entry(int(seq), json.loads(credit_id), int(credits), int(total), int(done))
    seq, credits, total, done, starts, flags, credit_id = line.split(" ", 6)
    return Entry(int(seq), json.loads(credit_id), int(credits), int(total), int(done),
                 int(starts), int(flags))


def _parse_inbox(line, full=False):
    credits, per_credit, credit_id = line.split(" ", 2)
    if full:
        return json.loads(credit_id), int(credits), int(per_credit)
    return json.loads(credit_id), int(credits)


def _replace(path, write):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        write(f)
        f.write(_END)
    try:
        os.rename(tmp, path)
    except OSError as e:
        # FAT cannot rename over a file (EEXIST); littlefs (the ESP32 default) and POSIX can.
        # Any other error leaves the old journal in place: never delete the only good copy.
        if e.args[0] != _EEXIST:
            raise
        os.remove(path)
        os.rename(tmp, path)  # a cut in between: _read_complete() falls back to the temp file



def _rename(old, new):
    try:
        os.rename(old, new)
    except OSError:  # not there (or FAT: an old copy is in the way, which we keep)
        pass


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _read_complete(path):
    """Lines (without the end marker) of path, else of its complete temp file, else None."""
    for candidate in (path, path + ".tmp"):
        lines = _read_lines(candidate)
        if lines is not None:
            return lines
    return None


def _read_lines(path):
    try:
        with open(path) as f:
            lines = [line for line in f]
    except OSError:
        return None
    if not lines or lines[-1] != _END:
        if path.endswith(".tmp"):
            return None  # cut while writing it: the real file is the truth
        raise JournalError(path + ": incomplete file")
    lines.pop()
    return [line.rstrip("\n") for line in lines]
