"""What the DynamoDB ledger adds to the shared contract: TTL that can never delete a payment,
retries of our own writes, index queries, and an ack racing the PUBACK (moto server, real HTTP)."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid

import pytest

from api.store import Claim, Link, Payment, State

LEASE = 60.0


@pytest.fixture
def table(aws_env):
    from api.store_dynamodb import create_table

    name = f"arcade-{uuid.uuid4().hex[:10]}"
    create_table(name)
    return name


@pytest.fixture
def dynamo(table):
    from api.store_dynamodb import DynamoDBStore

    return DynamoDBStore(table)


def payment(session_id="cs_test_1", machine_id="machine_123", intent: str | None = "pi_1"):
    return Payment(session_id, machine_id, 2, amount=200, currency="usd", payment_intent=intent)


def test_ttl_is_enabled_but_no_payment_or_link_ever_carries_it(dynamo, table):
    from api.store_dynamodb import TTL_ATTRIBUTE

    ttl = dynamo.client.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", TTL_ATTRIBUTE)
    # Every way a record is written or changed, including an expired lease taken over.
    dynamo.claim(payment("cs_a"), "t1", 1000.0, LEASE)
    dynamo.claim(payment("cs_a"), "t2", 1000.0 + 2 * LEASE, LEASE)
    dynamo.mark_published("cs_a", "t2", 1200.0)
    dynamo.mark("cs_a", State.ACKED, 1201.0)
    dynamo.claim(payment("cs_b", intent="pi_b"), "t", 1000.0, LEASE)
    dynamo.release("cs_b", "t", 1001.0)
    dynamo.record(payment("cs_c", intent="pi_c"), 1000.0)
    dynamo.mark("cs_c", State.REFUNDED, 1001.0)
    dynamo.save_link("machine_123", "price_1", Link("https://a", "plink_a", 1000.0))
    items = dynamo.client.scan(TableName=table)["Items"]
    assert len(items) == 4
    assert all(TTL_ATTRIBUTE not in item for item in items)


def test_a_lease_released_or_published_leaves_no_lease_behind(dynamo, table):
    dynamo.claim(payment("cs_a"), "t", 1000.0, LEASE)
    dynamo.mark_published("cs_a", "t", 1001.0)
    dynamo.claim(payment("cs_b", intent="pi_b"), "t", 1000.0, LEASE)
    dynamo.release("cs_b", "t", 1001.0)
    for item in dynamo.client.scan(TableName=table)["Items"]:
        assert "claim_token" not in item and "claim_expires" not in item


def test_our_own_claim_retried_after_a_lost_response_still_counts(dynamo):
    # botocore retries a request whose response was lost; the retry finds our own lease.
    assert dynamo.claim(payment(), "token-a", 1000.0, LEASE) == Claim.CLAIMED
    assert dynamo.claim(payment(), "token-a", 1000.0, LEASE) == Claim.CLAIMED
    assert dynamo.claim(payment(), "token-b", 1000.0, LEASE) == Claim.BUSY


def test_our_own_mark_published_retried_still_counts_but_not_anyone_elses(dynamo):
    dynamo.claim(payment(), "token-a", 1000.0, LEASE)
    assert dynamo.mark_published("cs_test_1", "token-a", 1001.0)
    assert dynamo.mark_published("cs_test_1", "token-a", 1001.0)
    assert dynamo.mark_published("cs_test_1", "token-b", 1001.0) is False
    assert dynamo.get("cs_test_1").published_at == 1001.0


def test_a_session_without_payment_intent_or_amount(dynamo):
    free = Payment("cs_free", "machine_123", 1)  # no_payment_required: no intent, no amount
    assert dynamo.claim(free, "t", 1000.0, LEASE) == Claim.CLAIMED
    stored = dynamo.get("cs_free")
    assert (stored.payment_intent, stored.amount, stored.currency) == (None, None, None)
    # A later event that knows the intent fills it in, like SQL's coalesce.
    dynamo.release("cs_free", "t", 1001.0)
    dynamo.claim(payment("cs_free", intent="pi_late"), "t2", 1002.0, LEASE)
    assert dynamo.find_by_payment_intent("pi_late").session_id == "cs_free"


def test_payments_honours_the_limit_newest_first(dynamo):
    for index in range(7):
        dynamo.record(payment(f"cs_{index}", intent=f"pi_{index}"), 1000.0 + index)
    assert [p.session_id for p in dynamo.payments(limit=3)] == ["cs_6", "cs_5", "cs_4"]
    assert len(dynamo.payments(machine_id="machine_123", limit=100)) == 7
    assert dynamo.payments(machine_id="nobody") == []


def test_a_missing_table_fails_ping(aws_env):
    from api.store_dynamodb import DynamoDBStore

    with pytest.raises(Exception, match="ResourceNotFound|non-existent|not found"):
        DynamoDBStore("no-such-table").ping()


def test_importing_the_store_does_not_import_boto3():
    code = "import sys, api.store_dynamodb; print('boto3' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def test_ack_racing_the_puback_always_ends_acked(store_factory):
    """The cabinet's ack and our mark_published land at the same moment, many times over."""
    store, publisher, acker = store_factory(), store_factory(), store_factory()
    for index in range(15):
        session_id = f"cs_race_{index}"
        store.claim(payment(session_id, intent=f"pi_race_{index}"), "t", 1000.0, LEASE)
        barrier = threading.Barrier(2)

        def publish(sid: str, gate: threading.Barrier) -> None:
            gate.wait()
            publisher.mark_published(sid, "t", 1001.0)

        def ack(sid: str, gate: threading.Barrier) -> None:
            gate.wait()
            acker.mark(sid, State.ACKED, 1001.0)

        threads = [threading.Thread(target=f, args=(session_id, barrier)) for f in (publish, ack)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        stored = store.get(session_id)
        assert (stored.state, stored.acked_at, stored.published_at) == (
            State.ACKED,
            1001.0,
            1001.0,
        )
