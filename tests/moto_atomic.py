"""moto's DynamoDB made as atomic as DynamoDB: one request at a time.

DynamoDB applies each conditional write to an item atomically; that is what the ledger's claim
rests on. moto's server evaluates the condition and applies the update without a lock, so under
load two concurrent claims can both see "no item yet" and both succeed: the contract test's race
then tests moto, not our store, and fails at random. Serialising moto's DynamoDB requests gives
back the guarantee of the real service; a store that read first and wrote later (two requests)
would still race and still fail the test.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

# Re-entrant, so that nesting (a session-wide patch plus a test's own) cannot deadlock.
_LOCK = threading.RLock()


@contextmanager
def atomic_dynamodb() -> Iterator[None]:
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.call_action
    if getattr(original, "serialised", False):
        yield  # already in force
        return

    def call_action(self):
        with _LOCK:
            return original(self)

    call_action.serialised = True
    with mock.patch.object(DynamoHandler, "call_action", call_action):
        yield
