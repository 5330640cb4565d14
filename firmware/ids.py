# The ids this cabinet has seen (the dedupe memory), on flash in ids.bin: one 16-byte record per
# id, found by scanning the file (no RAM index: 2,048 records are 32 KB of flash, 512 B of RAM).
#
# A record is the first 11 bytes of SHA-256(id), its state (received, done, expired) and the
# time until which it must be kept (seconds since 2000; _FOREVER when the clock was unset). A
# record past its time (with a valid clock) is free for reuse; when none is free and the file is
# full, the oldest slot of the ring is overwritten. Records are written in place (r+b), so a
# power cut costs at most the one record being written. See docs/firmware.md ("Dedupe window").
import hashlib

from micropython import const

IDS = "ids.bin"
RECEIVED = const(1)  # journaled on flash, not yet done
DONE = const(2)
EXPIRED = const(3)
FOREVER = const(0xFFFFFFFF)  # kept until the ring overwrites it
_MAGIC = b"ids1"
_DIGEST = const(11)
_RECORD = const(16)
_HEADER = const(16)  # magic, ring head (4 bytes), capacity (4 bytes), spare
_CHUNK = const(32)  # records per read


def digest(credit_id):
    return hashlib.sha256(credit_id.encode()).digest()[:_DIGEST]


class IdStore:
    def __init__(self, path, capacity=2048):
        self._path = path
        self._capacity = capacity
        self._buf = bytearray(_CHUNK * _RECORD)  # the one read buffer, allocated once
        self._rec = bytearray(_RECORD)
        self.count = 0  # slots written so far (the file's size)
        self._head = 0  # the slot the ring overwrites next
        self.shortened = 0  # records overwritten before their time (window shorter than promised)
        self.until = 0  # keep-until of the record find() found

    def load(self):
        """Open or create ids.bin; raises ValueError for a file in no format we know."""
        try:
            f = open(self._path, "rb")
        except OSError:
            self._create()
            return
        try:
            header = f.read(_HEADER)
            size = f.seek(0, 2)
        finally:
            f.close()
        if len(header) < _HEADER or header[:4] != _MAGIC:
            raise ValueError(self._path + ": not an id store")
        self._head = int.from_bytes(header[4:8], "big")
        self.count = min((size - _HEADER) // _RECORD, self._capacity)  # a torn last record: gone
        if self._head >= self._capacity:
            self._head = 0

    def _create(self):
        with open(self._path, "wb") as f:
            f.write(self._header())
        self.count = self._head = 0

    def _header(self):
        return _MAGIC + self._head.to_bytes(4, "big") + self._capacity.to_bytes(4, "big") + bytes(4)

    def find(self, d, now_s=None):
        """(slot, state) of digest d, or (free slot or -1, 0) when it is not there.

        now_s: seconds since 2000 with a valid clock (records kept until before then are free),
        or None while the clock is unset (nothing is freed by time).
        """
        buf = self._buf
        free = -1
        slot = 0
        with open(self._path, "rb") as f:
            f.seek(_HEADER)
            while slot < self.count:
                n = f.readinto(buf) // _RECORD
                if n == 0:
                    break
                n = min(n, self.count - slot)
                maybe = d in buf  # a search in C; usually the answer is no
                for i in range(n):
                    at = i * _RECORD
                    state = buf[at + _DIGEST]
                    if maybe and state and buf[at:at + _DIGEST] == d:
                        self.until = _until(buf, at)
                        return slot + i, state
                    if free < 0 and (state == 0 or (now_s is not None and _until(buf, at) < now_s)):
                        free = slot + i
                slot += n
        return free, 0

    def put(self, d, state, until, slot=-1):
        """Record d (a slot from find(): its own, a free one, or -1 for a new or ring slot)."""
        rec = self._rec
        rec[0:_DIGEST] = d
        rec[_DIGEST] = state
        rec[12:16] = until.to_bytes(4, "big")
        move_head = False
        if slot < 0:
            if self.count < self._capacity:
                slot = self.count
            else:  # full, nothing free: overwrite the oldest slot of the ring
                slot = self._head
                self._head = (self._head + 1) % self._capacity
                move_head = True
        with open(self._path, "r+b") as f:
            if move_head:
                f.seek(0)
                f.write(self._header())
                self.shortened += 1
            f.seek(_HEADER + slot * _RECORD)
            f.write(rec)
        if slot >= self.count:
            self.count = slot + 1
        return slot

    def set_state(self, d, state, now_s=None):
        slot, old = self.find(d, now_s)
        if old:
            self.put(d, state, self.until, slot)


def _until(buf, at):
    return buf[at + 12] << 24 | buf[at + 13] << 16 | buf[at + 14] << 8 | buf[at + 15]
