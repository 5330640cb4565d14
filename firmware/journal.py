# The credit journal on flash: every accepted coinpulse until its ack is out, the pulses already
# delivered for it, and the ids credited recently (for dedupe). Each file is replaced atomically
# (write a temp file, os.rename), so a power cut leaves either the old or the new version.
import json
import os

JOURNAL = "journal.dat"
RECENT = "recent.dat"
_END = "end\n"  # last line of a complete file: a truncated temp file is never trusted


class JournalError(Exception):
    pass


class Entry:
    __slots__ = ("seq", "credit_id", "credits", "total", "done")

    def __init__(self, seq, credit_id, credits, total, done):
        self.seq = seq
        self.credit_id = credit_id
        self.credits = credits
        self.total = total  # pulses owed: credits * pulses_per_credit
        self.done = done  # pulses delivered and recorded

    def pulsing(self):
        return self.done < self.total


class Journal:
    def __init__(self, directory, keep_ids=64):
        self._dir = directory
        self._keep = keep_ids
        self.entries = []
        self.recent = []
        self._next_seq = 1

    def path(self, name):
        return self._dir + "/" + name if self._dir else name

    # --- reading ---------------------------------------------------------------------------
    def load(self):
        """Read both files; returns the number of entries still owed pulses or an ack."""
        self.entries = []
        self.recent = []
        self._next_seq = 1
        lines = _read_complete(self.path(JOURNAL))
        if lines:
            self._next_seq = int(lines[0].split()[1])
            for line in lines[1:]:
                self.entries.append(_parse_entry(line))
        for line in _read_complete(self.path(RECENT)) or ():
            self.recent.append(json.loads(line))
        self._remember_entry_ids()
        return len(self.entries)

    def set_aside(self):
        """Rename unreadable files to *.bad (for a human to read) and start empty."""
        for name in (JOURNAL, RECENT):
            try:
                os.rename(self.path(name), self.path(name + ".bad"))
            except OSError:
                pass
        self.entries = []
        self.recent = []
        self._next_seq = 1
        return self.path(JOURNAL + ".bad")

    def _remember_entry_ids(self):
        # The journal is written before the id list: after a cut between the two, repair it here.
        missing = False
        for entry in self.entries:
            if entry.credit_id is not None and entry.credit_id not in self.recent:
                self.recent.append(entry.credit_id)
                missing = True
        if missing:
            self._save_recent()

    def is_duplicate(self, credit_id):
        if credit_id is None:
            return False  # the seed's format: nothing to compare, always credited
        if credit_id in self.recent:
            return True
        for entry in self.entries:
            if entry.credit_id == credit_id:
                return True
        return False

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
            self.recent.append(credit_id)
            if len(self.recent) > self._keep:
                self.recent.pop(0)
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
            for credit_id in self.recent:
                f.write(json.dumps(credit_id))
                f.write("\n")

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
