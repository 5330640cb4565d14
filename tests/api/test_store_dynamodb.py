"""What the DynamoDB ledger adds to the shared contract: TTL that can never delete a payment,
writes retried after a lost response, and reads that are index queries, never scans (moto
server, real HTTP)."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from api.store import Cabinet, Claim, Heartbeat, Link, Payment, State, planned

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
    bare = Payment(session_id, machine_id, 2, amount=200, currency="usd", payment_intent=intent)
    return planned(bare, now=1000.0)


def operations(store) -> list[str]:
    """Every DynamoDB operation the store's client sends from now on."""
    sent: list[str] = []
    store.client.meta.events.register(
        "before-call.dynamodb.*", lambda model, **kwargs: sent.append(model.name)
    )
    return sent


def test_ttl_is_enabled_but_no_item_ever_carries_it(dynamo, table):
    from api.store_dynamodb import TTL_ATTRIBUTE

    ttl = dynamo.client.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", TTL_ATTRIBUTE)
    # Every way a record is written or changed, including an expired lease taken over.
    dynamo.claim(payment("cs_a"), "t1", 1000.0, LEASE)
    dynamo.claim(payment("cs_a"), "t2", 1000.0 + 2 * LEASE, LEASE)
    dynamo.published("cs_a", "t2", {"cs_a": 0}, 1121.0)
    dynamo.ack("machine_123", "cs_a", "done", "", 1122.0)
    dynamo.claim(payment("cs_b", intent="pi_b"), "t", 1000.0, LEASE)
    dynamo.release("cs_b", "t", 1001.0)
    dynamo.record(Payment("cs_c", "machine_123", 1, payment_intent="pi_c"), 1000.0)
    dynamo.note_intent("pi_c", session_id="cs_c", amount_refunded=100)
    dynamo.save_link("machine_123", "price_1", Link("https://a", "plink_a", 1000.0))
    dynamo.cabinet_seen(Cabinet("machine_123", "online", 1000.0))
    dynamo.heartbeat(Heartbeat("listener", 1000.0))
    items = dynamo.client.scan(TableName=table)["Items"]
    assert all(TTL_ATTRIBUTE not in item for item in items)
    # Beside these 7, the console's money totals of the paid payments (api/store_console*).
    console = ("counted#", "total#", "lastpay#")
    assert len([i for i in items if not i["pk"]["S"].startswith(console)]) == 7


def test_a_write_retried_after_a_lost_response_is_recognised(dynamo):
    # botocore retries a request whose response was lost; the re-read finds our own write.
    assert dynamo.claim(payment(), "token-a", 1000.0, LEASE) == Claim.CLAIMED
    assert dynamo.claim(payment(), "token-a", 1000.0, LEASE) == Claim.CLAIMED
    assert dynamo.claim(payment(), "token-b", 1000.0, LEASE) == Claim.BUSY
    assert dynamo.published("cs_test_1", "token-a", {"cs_test_1": 0}, 1001.0)
    version = dynamo.get("cs_test_1").version
    dynamo.published("cs_test_1", "token-a", {"cs_test_1": 0}, 1001.0)  # the same, again
    stored = dynamo.get("cs_test_1")
    assert (stored.published_at, stored.version) == (1001.0, version)  # nothing written


def test_a_session_without_payment_intent_or_amount(dynamo):
    free = planned(Payment("cs_free", "machine_123", 1), now=1000.0)
    assert dynamo.claim(free, "t", 1000.0, LEASE) == Claim.CLAIMED
    stored = dynamo.get("cs_free")
    assert (stored.payment_intent, stored.amount, stored.currency) == (None, None, None)


def test_payments_honour_the_limit_newest_first(dynamo):
    for index in range(7):
        dynamo.record(Payment(f"cs_{index}", "machine_123", 1, payment_intent=f"pi_{index}"),
                      1000.0 + index)
    assert [p.session_id for p in dynamo.payments(limit=3)] == ["cs_6", "cs_5", "cs_4"]
    assert len(dynamo.payments(machine_id="machine_123", limit=100)) == 7
    assert dynamo.payments(machine_id="nobody") == []


def test_every_read_is_a_key_read_or_an_index_query_never_a_scan(dynamo):
    dynamo.claim(payment(), "t", 1000.0, LEASE)
    dynamo.cabinet_seen(Cabinet("machine_123", "online", 1000.0))
    sent = operations(dynamo)
    dynamo.get("cs_test_1")
    dynamo.payments()
    dynamo.payments(machine_id="machine_123", state=State.PAID, since=0.0, until=2000.0)
    dynamo.payments(state=State.PAID)
    dynamo.undelivered()
    dynamo.due(5000.0)
    dynamo.find_by_payment_intent("pi_1")
    dynamo.cabinets()
    dynamo.heartbeats()
    assert set(sent) == {"GetItem", "Query"}


def test_a_missing_table_fails_ping(aws_env):
    from api.store_dynamodb import DynamoDBStore

    with pytest.raises(Exception, match="ResourceNotFound|non-existent|not found"):
        DynamoDBStore("no-such-table").ping()


def test_importing_the_store_does_not_import_boto3():
    code = "import sys, api.store_dynamodb; print('boto3' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
