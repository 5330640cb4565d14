"""The ledger in one DynamoDB table, for the API on Lambda (many instances, no shared disk).

Single-table layout (string partition key `pk`, no sort key):

- `session#<cs_…>`: one payment: the whole record as JSON in `doc` (api/ledger.py: part plan,
  part states, timeline, lease), plus the attributes its indexes need. A change reads the item
  (consistent read), applies a pure function and writes it back with the condition
  `version = <what was read>` (or "does not exist yet"): optimistic concurrency, retried on a
  conflict. So every change is atomic across Lambda instances, like SQLite's transaction, and a
  write botocore retries after a lost response is recognised on the re-read.
- `intent#<pi_…>`: what Stripe said about a payment intent (a refund or dispute may come before
  the session is known; see store.IntentNote). One UpdateItem merges and returns it.
- `link#<machine>#<price>`: a payment link (first writer wins with a conditional PutItem; a
  replacement only over the url it replaces).
- `cabinet#<machine>`, `heartbeat#<name>`: cabinets' last status; delivery processes' health.

Sparse global secondary indexes (only items carrying both keys are in one):

- `by_intent` (payment_intent), `by_machine` (machine_id, created_at),
  `by_state` (state, created_at): the operator's listings, newest first, by date range.
- `by_created` (kind, created_at): all payments (`kind` = "payment"), all cabinets ("cabinet"),
  all heartbeats ("heartbeat"). One partition per kind: fine for an arcade (a GSI partition takes
  1,000 writes/s), and every listing is a Query, never a Scan (the function may not Scan).
- `by_sweep` (kind, sweep_at): payments with a part to publish again or refund, by when; an item
  leaves the index when nothing is left to do (sweep_at removed).

Indexes are eventually consistent (usually well under a second): they only find candidates;
every decision re-reads the item itself consistently.

TTL: the table's TTL attribute is `expires_at`, and NO item here ever carries it. TTL deletes
whole items, and a lease lives inside its payment record, so "TTL on an expired claim" would
delete the record of a paid credit. The attribute is reserved for disposable items only.
"""

from __future__ import annotations

import json
from typing import Any

from api import ledger
from api.store import Cabinet, Change, Heartbeat, IntentNote, LedgerOps, Link, Payment, State, T
from api.store_console_dynamodb import ConsoleDynamoDB

# boto3 is imported on first use (nothing slow at Lambda import time), so no stubs here.
DynamoDBClient = Any

TTL_ATTRIBUTE = "expires_at"
PAYMENT_KIND = "payment"
CABINET_KIND = "cabinet"
HEARTBEAT_KIND = "heartbeat"
# Conflicting writers on one payment are a webhook, the sweep and a cabinet's ack at most.
_ATTEMPTS = 20


def _client() -> DynamoDBClient:
    import boto3
    from botocore.config import Config

    # A session per store: boto3's default session is not thread-safe to create clients from.
    config = Config(
        connect_timeout=3, read_timeout=5, retries={"mode": "standard", "max_attempts": 4}
    )
    return boto3.session.Session().client("dynamodb", config=config)


def create_table(table_name: str, client: DynamoDBClient | None = None) -> None:
    """Create the ledger table (on-demand, with its indexes and TTL) and wait until it is active.

    For tests and local setups; on AWS the SAM template creates the same table.
    """
    client = client or _client()
    client.create_table(
        TableName=table_name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "kind", "AttributeType": "S"},
            {"AttributeName": "machine_id", "AttributeType": "S"},
            {"AttributeName": "payment_intent", "AttributeType": "S"},
            {"AttributeName": "state", "AttributeType": "S"},
            {"AttributeName": "created_at", "AttributeType": "N"},
            {"AttributeName": "sweep_at", "AttributeType": "N"},
        ],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[
            _index("by_intent", "payment_intent"),
            _index("by_machine", "machine_id", "created_at"),
            _index("by_state", "state", "created_at"),
            _index("by_created", "kind", "created_at"),
            _index("by_sweep", "kind", "sweep_at"),
        ],
    )
    client.get_waiter("table_exists").wait(
        TableName=table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    client.update_time_to_live(
        TableName=table_name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
    )


def _index(name: str, hash_key: str, range_key: str | None = None) -> dict[str, Any]:
    keys = [{"AttributeName": hash_key, "KeyType": "HASH"}]
    if range_key:
        keys.append({"AttributeName": range_key, "KeyType": "RANGE"})
    return {"IndexName": name, "KeySchema": keys, "Projection": {"ProjectionType": "ALL"}}


class DynamoDBStore(ConsoleDynamoDB, LedgerOps):
    def __init__(self, table_name: str) -> None:
        self.table_name = table_name
        self._dynamodb: DynamoDBClient | None = None

    @property
    def client(self) -> DynamoDBClient:
        # Created on first use, so building the app (and importing the handler) stays fast.
        if self._dynamodb is None:
            self._dynamodb = _client()
        return self._dynamodb

    # --- payments -----------------------------------------------------------------------------
    def update(self, session_id: str, change: Change[T], now: float, durable: bool = True) -> T:
        # Every DynamoDB write is durable when acknowledged; `durable` changes nothing here.
        key = _session_key(session_id)
        for _ in range(_ATTEMPTS):
            item = self._get(key)
            current = ledger.loads(item["doc"]["S"]) if item else None
            payment, answer = change(current)
            if payment is None:
                return answer
            payment = ledger.finish(payment, now)
            payment.version = (current.version if current else 0) + 1
            request: dict[str, Any] = {"TableName": self.table_name, "Item": _payment_item(payment)}
            if current is None:
                request["ConditionExpression"] = "attribute_not_exists(pk)"
            else:
                request["ConditionExpression"] = "#version = :read"
                request["ExpressionAttributeNames"] = {"#version": "version"}
                request["ExpressionAttributeValues"] = {":read": _n(current.version)}
            try:
                self.client.put_item(**request)
            except self.client.exceptions.ConditionalCheckFailedException:
                continue  # someone wrote in between (or our own write, retried): read again
            self._after_change(session_id)  # the console's totals and alerts
            return answer
        raise RuntimeError(f"could not update {session_id}: it keeps changing")

    def insert_new(self, payment: Payment, now: float) -> bool:
        payment.version = 1
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=_payment_item(payment),
                ConditionExpression="attribute_not_exists(pk)",
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return False  # exists (or our own write, retried: update's re-read recognises it)
        return True

    def get(self, session_id: str) -> Payment | None:
        item = self._get(_session_key(session_id))
        return ledger.loads(item["doc"]["S"]) if item else None

    def payments(
        self,
        machine_id: str | None = None,
        state: State | str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
    ) -> list[Payment]:
        names = {"#key": "kind", "#at": "created_at"}
        values: dict[str, Any] = {}
        filters = []
        if machine_id is not None:
            index, names["#key"] = "by_machine", "machine_id"
            values[":key"] = _s(machine_id)
            if state is not None:
                names["#state"] = "state"
                values[":state"] = _s(str(state))
                filters.append("#state = :state")
        elif state is not None:
            index, names["#key"], values[":key"] = "by_state", "state", _s(str(state))
        else:
            index, values[":key"] = "by_created", _s(PAYMENT_KIND)
        condition = "#key = :key"
        if since is not None and until is not None:
            condition += " AND #at BETWEEN :since AND :until"
            values |= {":since": _n(since), ":until": _n(until)}
        elif since is not None:
            condition += " AND #at >= :since"
            values[":since"] = _n(since)
        elif until is not None:
            condition += " AND #at < :until"
            values[":until"] = _n(until)
        if "#at" not in condition:
            del names["#at"]  # DynamoDB refuses a name the expressions do not use
        query: dict[str, Any] = {
            "IndexName": index,
            "KeyConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": False,  # newest first
        }
        if filters:
            query["FilterExpression"] = " AND ".join(filters)
        found = [ledger.loads(item["doc"]["S"]) for item in self._query(query, limit)]
        if until is not None:  # BETWEEN includes its upper end; [since, until) does not
            found = [payment for payment in found if payment.created_at < until]
        return found

    def due(self, now: float, limit: int = 100) -> list[Payment]:
        query = {
            "IndexName": "by_sweep",
            "KeyConditionExpression": "kind = :kind AND sweep_at <= :now",
            "ExpressionAttributeValues": {":kind": _s(PAYMENT_KIND), ":now": _n(now)},
        }
        return [ledger.loads(item["doc"]["S"]) for item in self._query(query, limit)]

    def find_by_payment_intent(self, payment_intent: str) -> Payment | None:
        note = self._get(_intent_key(payment_intent))
        session_id = _text(note, "session_id") if note else None
        if session_id:  # consistent: the intent's own item
            return self.get(session_id)
        query = {  # a payment recorded before its intent was noted (e.g. awaiting payment)
            "IndexName": "by_intent",
            "KeyConditionExpression": "payment_intent = :pi",
            "ExpressionAttributeValues": {":pi": _s(payment_intent)},
        }
        items = self._query(query, 1)
        return ledger.loads(items[0]["doc"]["S"]) if items else None

    def note_intent(
        self,
        payment_intent: str,
        session_id: str = "",
        amount_refunded: int = 0,
        disputed: bool = False,
    ) -> IntentNote:
        key = {"pk": _s(_intent_key(payment_intent))}
        request = {"TableName": self.table_name, "Key": key}
        if session_id:
            self.client.update_item(
                **request,
                UpdateExpression="SET session_id = if_not_exists(session_id, :sid)",
                ExpressionAttributeValues={":sid": _s(session_id)},
            )
        if amount_refunded:
            try:
                self.client.update_item(
                    **request,
                    UpdateExpression="SET amount_refunded = :amount",
                    ConditionExpression="attribute_not_exists(amount_refunded)"
                    " OR amount_refunded < :amount",
                    ExpressionAttributeValues={":amount": _n(amount_refunded)},
                )
            except self.client.exceptions.ConditionalCheckFailedException:
                pass  # a larger refund is already known
        if disputed:
            self.client.update_item(
                **request,
                UpdateExpression="SET disputed = :yes",
                ExpressionAttributeValues={":yes": {"BOOL": True}},
            )
        item = self._get(_intent_key(payment_intent)) or {}
        return IntentNote(
            payment_intent,
            _text(item, "session_id") or "",
            int(_number(item, "amount_refunded") or 0),
            item.get("disputed", {}).get("BOOL", False),
        )

    # --- links ----------------------------------------------------------------------------------
    def link(self, machine_id: str, price_id: str) -> Link | None:
        item = self._get(_link_key(machine_id, price_id))
        if not item:
            return None
        checked_at = float(item["checked_at"]["N"]) if "checked_at" in item else 0.0
        return Link(item["url"]["S"], item.get("link_id", {}).get("S", ""), checked_at)

    def save_link(
        self, machine_id: str, price_id: str, link: Link, replacing: str | None = None
    ) -> Link:
        key = _link_key(machine_id, price_id)
        item = {"pk": _s(key), "url": _s(link.url), "link_id": _s(link.link_id),
                "created_at": _n(link.checked_at), "checked_at": _n(link.checked_at)}
        condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
        if replacing is not None:
            condition = {"ConditionExpression": "#url = :replacing",
                         "ExpressionAttributeNames": {"#url": "url"},
                         "ExpressionAttributeValues": {":replacing": _s(replacing)}}
        try:
            self.client.put_item(TableName=self.table_name, Item=item, **condition)
        except self.client.exceptions.ConditionalCheckFailedException:
            pass  # another writer was first
        return self.link(machine_id, price_id) or link

    # --- cabinets and heartbeats ----------------------------------------------------------------
    def cabinet_seen(self, cabinet: Cabinet) -> None:
        self._cabinet_update(
            cabinet.machine_id,
            cabinet.last_seen,
            "cabinet_state = :state, last_seen = :at, firmware = :firmware,"
            " pending_credits = :pending, problem = :problem, detail = :detail",
            {
                ":state": _s(cabinet.state),
                ":firmware": _s(cabinet.firmware),
                ":pending": _n(cabinet.pending_credits),
                ":problem": _s(cabinet.problem),
                ":detail": _s(cabinet.detail),
            },
        )

    def cabinet_heard(self, machine_id: str, now: float) -> None:
        try:
            self._cabinet_update(
                machine_id,
                now,
                "cabinet_state = if_not_exists(cabinet_state, :state), last_seen = :at",
                {":state": _s("online")},
                condition="attribute_not_exists(last_seen) OR last_seen < :at",
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            pass  # a later message was already recorded

    def _cabinet_update(
        self, machine_id: str, at: float, sets: str, values: dict, condition: str | None = None
    ) -> None:
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": {"pk": _s(f"cabinet#{machine_id}")},
            # `cabinet_id`, not machine_id: with created_at, a machine_id would put the cabinet
            # in the payments' by_machine index (a cabinet's payments would list it).
            "UpdateExpression": f"SET kind = :kind, cabinet_id = :machine,"
            f" created_at = if_not_exists(created_at, :at), {sets}",
            "ExpressionAttributeValues": values
            | {":kind": _s(CABINET_KIND), ":machine": _s(machine_id), ":at": _n(at)},
        }
        if condition:
            request["ConditionExpression"] = condition
        self.client.update_item(**request)

    def cabinets(self) -> list[Cabinet]:
        found = [
            Cabinet(
                machine_id=item["cabinet_id"]["S"],
                state=item["cabinet_state"]["S"],
                last_seen=float(item["last_seen"]["N"]),
                firmware=_text(item, "firmware") or "",
                pending_credits=int(_number(item, "pending_credits") or 0),
                problem=_text(item, "problem") or "",
                detail=_text(item, "detail") or "",
            )
            for item in self._of_kind(CABINET_KIND)
        ]
        return sorted(found, key=lambda cabinet: cabinet.machine_id)

    def heartbeat(self, beat: Heartbeat) -> None:
        self.client.put_item(
            TableName=self.table_name,
            Item={
                "pk": _s(f"heartbeat#{beat.name}"),
                "kind": _s(HEARTBEAT_KIND),
                "created_at": _n(beat.at),
                "name": _s(beat.name),
                "detail": _s(json.dumps(beat.detail)),
            },
        )

    def heartbeats(self) -> list[Heartbeat]:
        beats = [
            Heartbeat(
                item["name"]["S"], float(item["created_at"]["N"]), json.loads(item["detail"]["S"])
            )
            for item in self._of_kind(HEARTBEAT_KIND)
        ]
        return sorted(beats, key=lambda beat: beat.name)

    def ping(self) -> None:
        # A data-plane read of a key that never exists: proves table, credentials and network.
        self._get("ping")

    # --- plumbing -------------------------------------------------------------------------------
    def _get(self, key: str) -> dict[str, Any] | None:
        response = self.client.get_item(
            TableName=self.table_name, Key={"pk": _s(key)}, ConsistentRead=True
        )
        return response.get("Item")

    def _of_kind(self, kind: str) -> list[dict[str, Any]]:
        """Every cabinet or heartbeat item (tens of them): one partition of `by_created`."""
        query = {
            "IndexName": "by_created",
            "KeyConditionExpression": "kind = :kind",
            "ExpressionAttributeValues": {":kind": _s(kind)},
        }
        return self._query(query, 10_000)

    def _query(self, query: dict[str, Any], limit: int) -> list[dict[str, Any]]:
        """Up to `limit` items of an index query, following pages."""
        query = {"TableName": self.table_name, **query}
        found: list[dict[str, Any]] = []
        while len(found) < limit:
            response = self.client.query(**query, Limit=max(1, limit - len(found)))
            found += response.get("Items", [])
            if "LastEvaluatedKey" not in response:
                break
            query["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return found[:limit]


def _payment_item(payment: Payment) -> dict[str, Any]:
    item = {
        "pk": _s(_session_key(payment.session_id)),
        "kind": _s(PAYMENT_KIND),
        "session_id": _s(payment.session_id),
        "machine_id": _s(payment.machine_id),
        "state": _s(str(payment.state)),
        "created_at": _n(payment.created_at),
        "updated_at": _n(payment.updated_at),
        "version": _n(payment.version),
        "doc": _s(ledger.dumps(payment)),
    }
    if payment.payment_intent:  # index keys may not be empty
        item["payment_intent"] = _s(payment.payment_intent)
    sweep_at = payment.sweep_at()
    if sweep_at is not None:
        item["sweep_at"] = _n(sweep_at)
    return item


def _session_key(session_id: str) -> str:
    return f"session#{session_id}"


def _intent_key(payment_intent: str) -> str:
    return f"intent#{payment_intent}"


def _link_key(machine_id: str, price_id: str) -> str:
    return f"link#{machine_id}#{price_id}"


def _s(value: str) -> dict[str, str]:
    return {"S": str(value)}


def _n(value: float | int) -> dict[str, str]:
    return {"N": repr(value)}  # repr round-trips a float exactly


def _number(item: dict[str, Any], name: str) -> float | None:
    raw = item.get(name, {}).get("N")
    return float(raw) if raw is not None else None


def _text(item: dict[str, Any], name: str) -> str | None:
    return item.get(name, {}).get("S")
