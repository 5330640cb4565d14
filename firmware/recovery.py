# Reading the flash back after a reset: the journal, the backlog waiting in the inbox, the id
# store, the id list of older firmware. Boot-time only: app.py drops this module once the loop
# runs (its ~2 KB of RAM go back to the heap), and an operator imports it at the REPL to release
# a message held at the repeat cap (see docs/firmware.md).
import json
import os

import ids
from journal import END, JOURNAL, Entry, Journal, parse_inbox, remove

RECENT = "recent.dat"  # the id list of firmware 1.0 and 1.0.x: converted into ids.bin once
_RECENT_V2 = "v2 sha256/96"


class JournalError(Exception):
    pass


def load(journal):
    """Fill journal from flash; returns the number of messages still owed (the inbox's too).

    An unreadable journal raises (the caller sets it aside). An unreadable id store or old id list
    is renamed *.bad and loading goes on: the credits owed are kept.
    """
    journal.reset()
    lines = read_complete(journal.path(JOURNAL))
    if lines:
        head = lines[0].split()
        journal.next_seq = int(head[1])
        if head[0] == "v2":
            journal.inbox_gen, journal.inbox_pos = int(head[2]), int(head[3])
        for line in lines[1:]:
            journal.entries.append(_parse_entry(line, head[0]))
    _clean_inboxes(journal)
    journal.inbox_told = journal.inbox_pos
    _count_inbox(journal)
    store = journal.ids
    try:
        store.load()
    except (OSError, ValueError) as e:
        journal.recent_problem = repr(e)
        _rename(journal.path(ids.IDS), journal.path(ids.IDS + ".bad"))
        store.load()
    try:
        _convert_recent(journal)
    except Exception as e:  # ValueError, JournalError, UnicodeError: keep it for a human
        journal.recent_problem = repr(e)
        _rename(journal.path(RECENT), journal.path(RECENT + ".bad"))
    for entry in journal.entries:  # a journal older than the id store: remember its ids
        if entry.credit_id is not None:
            d = ids.digest(entry.credit_id)
            slot, state = store.find(d)
            if not state:
                store.put(d, ids.RECEIVED, ids.FOREVER, slot)
    journal.top_up()
    return len(journal.entries) + journal.inbox_waiting


def set_aside(journal):
    """Rename an unreadable journal to *.bad (for a human to read) and start empty."""
    _rename(journal.path(JOURNAL), journal.path(JOURNAL + ".bad"))
    journal.reset()
    journal.ids.load()
    return journal.path(JOURNAL + ".bad")


def release(directory=""):
    """For the operator at the REPL, once the cause is fixed: `import recovery;
    recovery.release()`. Held messages pulse again after the next reset."""
    journal = Journal(directory)
    load(journal)
    released = []
    for entry in journal.entries:
        if entry.held:
            entry.flags = 0
            entry.starts = 0
            released.append(entry.credit_id)
    if released:
        journal.save()
    print("released:", released if released else "nothing was held")
    return released


def _convert_recent(journal):
    """The id list of firmware 1.0 (one JSON id a line) or 1.0.x (hex digests) -> ids.bin."""
    lines = read_complete(journal.path(RECENT))
    if lines is None:
        return
    if lines and lines[0] == _RECENT_V2:
        digests = [bytes.fromhex(line)[:11] for line in lines[1:]]
    else:
        digests = [ids.digest(json.loads(line)) for line in lines]
    for d in digests:
        slot, state = journal.ids.find(d)
        if not state:
            journal.ids.put(d, ids.DONE, ids.FOREVER, slot)
    os.remove(journal.path(RECENT))


def _clean_inboxes(journal):
    folder = journal.path("")
    for name in os.listdir(folder) if folder else os.listdir():
        if name.startswith("inbox") and name.endswith(".dat") and (
                journal.path(name) != journal.inbox()):
            os.remove(journal.path(name))  # consumed before a power cut let us remove it


def _count_inbox(journal):
    """Lines, credits and size of the inbox from where the journal has taken it."""
    journal.inbox_waiting = journal.inbox_credits = 0
    journal.inbox_end = journal.inbox_pos
    torn = False
    try:
        with open(journal.inbox()) as f:
            f.seek(journal.inbox_pos)
            while True:
                line = f.readline()
                if not line.endswith("\n"):
                    torn = bool(line)  # cut while appending (FAT): it was not PUBACKed
                    break
                journal.inbox_waiting += 1
                journal.inbox_credits += parse_inbox(line)[1]
                journal.inbox_end = f.tell()
    except OSError:
        return
    if torn:  # copy the whole lines to a new file, or the next append would join the torn one
        old = journal.inbox()
        with open(old) as f, open(journal.inbox(journal.inbox_gen + 1), "w") as out:
            f.seek(journal.inbox_pos)
            for line in f:
                if line.endswith("\n"):
                    out.write(line)
        journal.inbox_gen += 1
        journal.inbox_end -= journal.inbox_pos
        journal.inbox_pos = journal.inbox_told = 0
        journal.save()
        remove(old)


def _parse_entry(line, version):
    if version == "v1":  # firmware 1.0
        seq, credits, total, done, credit_id = line.split(" ", 4)
        return Entry(int(seq), json.loads(credit_id), int(credits), int(total), int(done))
    seq, credits, total, done, starts, flags, credit_id = line.split(" ", 6)
    return Entry(int(seq), json.loads(credit_id), int(credits), int(total), int(done),
                 int(starts), int(flags))


def _rename(old, new):
    try:
        os.rename(old, new)
    except OSError:  # not there (or FAT: an old copy is in the way, which we keep)
        pass


def read_complete(path):
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
    if not lines or lines[-1] != END:
        if path.endswith(".tmp"):
            return None  # cut while writing it: the real file is the truth
        raise JournalError(path + ": incomplete file")
    lines.pop()
    return [line.rstrip("\n") for line in lines]
