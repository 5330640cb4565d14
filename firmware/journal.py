# The credit journal on flash: every accepted coinpulse until its ack is out, the pulses already
# delivered for it, and the ids credited recently (for dedupe). Each file is replaced atomically
# (write a temp file, os.rename), so a power cut leaves either the old or the new version.
#
# Recent ids are kept as digests, not strings: the first 12 bytes (96 bits) of SHA-256 of each id,
# in one bytearray allocated at boot (64 x 12 = 768 bytes instead of ~6 KB of 66-character
# Checkout Session ids). A new id is mistaken for a remembered one only if its digest equals one
# of the 64: odds 64 / 2**96, about 1 in 10**27 per message (see docs/firmware.md).
import hashlib
import json
import os

from micropython import const

JOURNAL = "journal.dat"
RECENT = "recent.dat"
_END = "end\n"  # last line of a complete file: a truncated temp file is never trusted
_RECENT_V2 = "v2 sha256/96"  # first line of recent.dat since 1.1 (1.0: one JSON id a line)
_DIGEST = const(12)


class JournalError(Exception):
    pass


class Entry:
    def __init__(self, seq, credit_id, credits, total, done):
        self.seq = seq
        self.credit_id = credit_id
        self.credits = credits
        self.total = total  # pulses owed: credits * pulses_per_credit
        self.done = done  # pulses delivered and recorded

    def pulsing(self):
        return self.done < self.total


def digest(credit_id):
    return hashlib.sha256(credit_id.encode()).digest()[:_DIGEST]


class Journal:
    def __init__(self, directory, keep_ids=64):
        self._dir = directory
        self._keep = keep_ids
        self._ids = bytearray(keep_ids * _DIGEST)  # a ring of digests, allocated once
        self.remembered = 0  # slots in use
        self._head = 0  # the slot written next (the oldest once all are in use)
        self.recent_problem = None  # why recent.dat was set aside by load(), if it was
        self.entries = []
        self._next_seq = 1

    def path(self, name):
        return self._dir + "/" + name if self._dir else name

    # --- reading ---------------------------------------------------------------------------
    def load(self):
        """Read both files; returns the number of entries still owed pulses or an ack.

        An unreadable journal raises (the caller sets both files aside). An unreadable id list
        alone is renamed to recent.dat.bad and load goes on: the credits owed are kept, and the
        ids still in the journal are remembered again from it. self.recent_problem says why.
        """
        self._reset()
        lines = _read_complete(self.path(JOURNAL))
        if lines:
            self._next_seq = int(lines[0].split()[1])
            for line in lines[1:]:
                self.entries.append(_parse_entry(line))
        save = False
        try:
            save = self._load_recent()
        except Exception as e:  # ValueError, JournalError, UnicodeError: keep it for a human
            self.remembered = self._head = 0
            self.recent_problem = repr(e)
            _rename(self.path(RECENT), self.path(RECENT + ".bad"))
            save = True
        # The journal is written before the id list: after a cut between the two, repair it here.
        for entry in self.entries:
            if entry.credit_id is not None:
                d = digest(entry.credit_id)
                if not self._known(d):
                    self._remember(d)
                    save = True
        if save:
            self._save_recent()
        return len(self.entries)

    def _load_recent(self):
        """Fill the ring from recent.dat; True when the file must be rewritten (old format)."""
        lines = _read_complete(self.path(RECENT))
        if not lines:
            return False
        if lines[0] == _RECENT_V2:
            for i in range(1, len(lines)):
                self._remember(bytes.fromhex(lines[i]))
            return False
        for line in lines:  # firmware 1.0 wrote one JSON id a line: converted once
            self._remember(digest(json.loads(line)))
        return True

    def _reset(self):
        self.entries = []
        self._next_seq = 1
        self.remembered = 0
        self._head = 0

    def set_aside(self):
        """Rename unreadable files to *.bad (for a human to read) and start empty."""
        for name in (JOURNAL, RECENT):
            _rename(self.path(name), self.path(name + ".bad"))
        self._reset()
        return self.path(JOURNAL + ".bad")

    def is_duplicate(self, credit_id):
        if credit_id is None:
            return False  # the seed's format: nothing to compare, always credited
        for entry in self.entries:
            if entry.credit_id == credit_id:
                return True
        return self._known(digest(credit_id))

    def _known(self, d):
        ids = self._ids
        if d not in ids:  # a search in C; usually the answer
            return False
        for at in range(0, self.remembered * _DIGEST, _DIGEST):  # only whole, used slots count
            if ids[at] == d[0] and ids[at:at + _DIGEST] == d:
                return True
        return False

    def _remember(self, d):
        at = self._head * _DIGEST
        self._ids[at:at + _DIGEST] = d
        self._head = (self._head + 1) % self._keep
        if self.remembered < self._keep:
            self.remembered += 1

    def next_to_pulse(self):
        for entry in self.entries:
            if entry.pulsing():
                return entry
        return None

    def next_to_ack(self):
        for entry in self.entries:
            if not entry.pulsing():
                return entry
        return None

    def pending_credits(self):
        """Credits paid for but not yet fully pulsed."""
        owed = 0
        for entry in self.entries:
            if entry.pulsing():
                per_credit = entry.total // entry.credits
                owed += entry.credits - entry.done // per_credit
        return owed

    # --- writing ---------------------------------------------------------------------------
    def add(self, credit_id, credits, pulses_per_credit):
        """Record a paid message durably; the caller may PUBACK only after this returns."""
        entry = Entry(self._next_seq, credit_id, credits, credits * pulses_per_credit, 0)
        self.entries.append(entry)
        self._next_seq += 1
        try:
            self._save_journal()
        except OSError:
            self.entries.remove(entry)
            self._next_seq -= 1
            raise
        if credit_id is not None:
            self._remember(digest(credit_id))
            self._save_recent()
        return entry

    def pulsed(self, entry):
        """One more pulse of entry delivered: recorded after the relay opened (see pulser.py)."""
        entry.done += 1
        self._save_journal()

    def acked(self, entry):
        self.entries.remove(entry)
        self._save_journal()

    def _save_journal(self):
        def write(f):
            f.write("v1 %d\n" % self._next_seq)
            for e in self.entries:
                f.write("%d %d %d %d " % (e.seq, e.credits, e.total, e.done))
                f.write(json.dumps(e.credit_id))
                f.write("\n")

        _replace(self.path(JOURNAL), write)

    def _save_recent(self):
        def write(f):
            f.write(_RECENT_V2)
            f.write("\n")
            ids = memoryview(self._ids)
            slot = (self._head - self.remembered) % self._keep  # oldest first
            for _ in range(self.remembered):
                at = slot * _DIGEST
                f.write(ids[at:at + _DIGEST].hex())
                f.write("\n")
                slot = (slot + 1) % self._keep

        _replace(self.path(RECENT), write)


def _parse_entry(line):
    seq, credits, total, done, credit_id = line.split(" ", 4)
    return Entry(int(seq), json.loads(credit_id), int(credits), int(total), int(done))


def _replace(path, write):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        write(f)
        f.write(_END)
    try:
        os.rename(tmp, path)
    except OSError:
        # FAT cannot rename over a file; littlefs (the ESP32 default) and POSIX can. The complete
        # temp file survives the gap and _read_complete() falls back to it.
        os.remove(path)
        os.rename(tmp, path)


def _rename(old, new):
    try:
        os.rename(old, new)
    except OSError:  # not there (or FAT: an old copy is in the way, which we keep)
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
