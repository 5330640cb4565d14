"""The ledger in one DynamoDB table, for the API on Lambda (many instances, no shared disk).

Single-table layout (string partition key `pk`, no sort key):

- `session#<cs_…>`: one payment record, with its lease (`claim_token`, `claim_expires`) inline so
  that claiming is ONE conditional UpdateItem — atomic across every Lambda instance, exactly like
  the SQLite upsert.
- `link#<machine>#<price>`: a payment link (first writer wins with a conditional PutItem).

Three sparse global secondary indexes, only payment items carry their keys:

- `by_intent` (payment_intent): refunds and disputes name the PaymentIntent, not the session.
- `by_machine` (machine_id, created_at): one cabinet's payments newest first, without a scan.
- `by_created` (kind, created_at): all payments newest first. `kind` is the constant "payment",
  so this index is one partition: fine for an arcade (a GSI partition takes 1,000 writes/s) and it
  keeps the operator's listing a Query, never a Scan of the whole ledger.

Indexes are eventually consistent (usually well under a second): `payments` and
`find_by_payment_intent` serve operator views and refunds, which come long after the payment.
Everything that decides whether to publish uses consistent reads of the primary key.

TTL: the table's TTL attribute is `expires_at`, and NO payment or link item ever carries it. TTL
deletes whole items, and a lease lives inside its payment record, so "TTL on an expired claim"
would delete the record of a paid credit. Expired leases need no deletion: the claim condition
ignores them (`claim_expires <= now`) and the next claim overwrites them; `mark_published` and
`release` remove them. The attribute is reserved for disposable items only.
"""

from __future__ import annotations

from typing import Any

from api.store import Cabinet, Claim, Payment, State, why_not_claimed
from api.store_console_dynamodb import ConsoleDynamoDB

# boto3 is imported on first use (nothing slow at Lambda import time), so no stubs here.
DynamoDBClient = Any

TTL_ATTRIBUTE = "expires_at"
PAYMENT_KIND = "payment"

# Attributes a claim writes only when the record is new (the SQLite INSERT's values).
_INSERT_ONLY = ("session_id", "machine_id", "credits", "amount", "currency", "created_at")


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
            {"AttributeName": "created_at", "AttributeType": "N"},
        ],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[
            _index("by_intent", "payment_intent"),
            _index("by_machine", "machine_id", "created_at"),
            _index("by_created", "kind", "created_at"),
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


class DynamoDBStore(ConsoleDynamoDB):
    def __init__(self, table_name: str) -> None:
        self.table_name = table_name
        self._dynamodb: DynamoDBClient | None = None

    @property
    def client(self) -> DynamoDBClient:
        # Created on first use, so building the app (and importing the handler) stays fast.
        if self._dynamodb is None:
            self._dynamodb = _client()
        return self._dynamodb

    # --- exactly-once -----------------------------------------------------------------------

    def claim(self, payment: Payment, token: str, now: float, lease_seconds: float) -> Claim:
        values = {
            ":claimed": _s(State.CLAIMED),
            ":pending": _s(State.PENDING),
            ":token": _s(token),
            ":expires": _n(now + lease_seconds),
            ":now": _n(now),
            ":kind": _s(PAYMENT_KIND),
        }
        sets = [
            "#state = :claimed",
            "claim_token = :token",
            "claim_expires = :expires",
            "updated_at = :now",
            "kind = :kind",
        ]
        fields = _payment_fields(payment, now)
        for name in _INSERT_ONLY:
            if name in fields:
                values[f":{name}"] = fields[name]
                sets.append(f"{name} = if_not_exists({name}, :{name})")
        if "payment_intent" in fields:  # like SQL's coalesce(existing, new)
            values[":payment_intent"] = fields["payment_intent"]
            sets.append("payment_intent = if_not_exists(payment_intent, :payment_intent)")
        current = self._update(
            payment.session_id,
            "SET " + ", ".join(sets),
            # New record, or one that may still be credited and whose lease is free or expired.
            "attribute_not_exists(pk) OR (#state IN (:pending, :claimed)"
            " AND (attribute_not_exists(claim_expires) OR claim_expires <= :now))",
            values,
        )
        if current is None:
            return Claim.CLAIMED
        if current.get("claim_token", {}).get("S") == token and _state(current) == State.CLAIMED:
            return Claim.CLAIMED  # our own write, retried by botocore after a lost response
        return why_not_claimed(_payment(current) if current else None)

    def mark_published(self, session_id: str, token: str, now: float) -> bool:
        values = {
            ":now": _n(now),
            ":token": _s(token),
            ":claimed": _s(State.CLAIMED),
            ":published": _s(State.PUBLISHED),
        }
        current = self._update(
            session_id,
            "SET published_at = :now, updated_at = :now, #state = :published,"
            " published_token = :token REMOVE claim_token, claim_expires",
            "claim_token = :token AND #state = :claimed",
            values,
        )
        if current is not None:
            # Lost the lease, unless this is our own update retried after a lost response.
            return current.get("published_token", {}).get("S") == token
        # The cabinet may have acked before our PUBACK arrived: then the record ends acked.
        self._update(
            session_id,
            "SET #state = :acked",
            "#state = :published AND attribute_exists(acked_at)",
            {":published": _s(State.PUBLISHED), ":acked": _s(State.ACKED)},
        )
        return True

    def release(self, session_id: str, token: str, now: float) -> None:
        self._update(
            session_id,
            "SET #state = :pending, updated_at = :now REMOVE claim_token, claim_expires",
            "claim_token = :token AND #state = :claimed",
            {
                ":pending": _s(State.PENDING),
                ":now": _n(now),
                ":token": _s(token),
                ":claimed": _s(State.CLAIMED),
            },
        )

    # --- records ----------------------------------------------------------------------------

    def record(self, payment: Payment, now: float) -> None:
        item = {"pk": _s(_session_key(payment.session_id)), "kind": _s(PAYMENT_KIND)}
        item |= _payment_fields(payment, now)
        item |= {"state": _s(payment.state), "updated_at": _n(now)}
        try:
            self.client.put_item(
                TableName=self.table_name, Item=item, ConditionExpression="attribute_not_exists(pk)"
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            pass  # never overwrite (or downgrade) an existing record

    def mark(self, session_id: str, state: State, now: float) -> bool:
        if state == State.ACKED:
            return self._mark_acked(session_id, now)
        values = {":state": _s(state), ":now": _n(now)}
        condition = "attribute_exists(pk)"
        if state == State.FAILED:
            condition += " AND attribute_not_exists(published_at)"  # a credit given stays given
        current = self._update(
            session_id, "SET #state = :state, updated_at = :now", condition, values
        )
        return current is None

    def _mark_acked(self, session_id: str, now: float) -> bool:
        """Keep the first ack time; the state becomes acked only once published.

        Two conditional writes, each for one state of the record, retried if the state changed in
        between (mark_published may run concurrently), so the ack can never be left behind.
        """
        values = {":now": _n(now), ":published": _s(State.PUBLISHED)}
        update = "SET acked_at = if_not_exists(acked_at, :now), updated_at = :now"
        for _ in range(5):
            published = self._update(
                session_id,
                update + ", #state = :acked",
                "#state = :published",
                values | {":acked": _s(State.ACKED)},
            )
            if published is None:
                return True
            if not published:
                return False  # no such session
            other = self._update(
                session_id, update, "attribute_exists(pk) AND #state <> :published", values
            )
            if other is None:
                return True
        raise RuntimeError(f"could not record the ack of {session_id}: its state keeps changing")

    # --- reads ------------------------------------------------------------------------------

    def get(self, session_id: str) -> Payment | None:
        item = self._get(_session_key(session_id))
        return _payment(item) if item else None

    def find_by_payment_intent(self, payment_intent: str) -> Payment | None:
        response = self.client.query(
            TableName=self.table_name,
            IndexName="by_intent",
            KeyConditionExpression="payment_intent = :pi",
            ExpressionAttributeValues={":pi": _s(payment_intent)},
            Limit=1,
        )
        items = response.get("Items", [])
        return _payment(items[0]) if items else None

    def payments(self, machine_id: str | None = None, limit: int = 100) -> list[Payment]:
        if machine_id is None:
            index, condition, value = "by_created", "kind = :key", PAYMENT_KIND
        else:
            index, condition, value = "by_machine", "machine_id = :key", machine_id
        query: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": index,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": {":key": _s(value)},
            "ScanIndexForward": False,  # newest first
        }
        found: list[Payment] = []
        while len(found) < limit:
            response = self.client.query(**query, Limit=limit - len(found))
            found += [_payment(item) for item in response.get("Items", [])]
            if "LastEvaluatedKey" not in response:
                break
            query["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return found

    # --- links ------------------------------------------------------------------------------

    def get_link(self, machine_id: str, price_id: str) -> str | None:
        item = self._get(_link_key(machine_id, price_id))
        return item["url"]["S"] if item else None

    def put_link(self, machine_id: str, price_id: str, url: str, now: float) -> str:
        key = _link_key(machine_id, price_id)
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item={"pk": _s(key), "url": _s(url), "created_at": _n(now)},
                ConditionExpression="attribute_not_exists(pk)",
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            pass  # first writer wins
        return self.get_link(machine_id, price_id) or url

    def cabinet_seen(self, cabinet: Cabinet) -> None:
        self.client.put_item(
            TableName=self.table_name,
            Item={
                "pk": _s(f"cabinet#{cabinet.machine_id}"),
                # The console lists cabinets with a Query of by_created (kind "cabinet").
                "kind": _s("cabinet"),
                "created_at": _n(cabinet.last_seen),
                "cabinet": _s(cabinet.machine_id),
                "cabinet_state": _s(cabinet.state),
                "last_seen": _n(cabinet.last_seen),
                "firmware": _s(cabinet.firmware),
                "pending_credits": _n(cabinet.pending_credits),
            },
        )

    def cabinets(self) -> list[Cabinet]:
        # A Query of the cabinets' own index partition: a thousand cabinets, no table scan.
        found = [
            Cabinet(
                machine_id=item["cabinet"]["S"],
                state=item["cabinet_state"]["S"],
                last_seen=float(item["last_seen"]["N"]),
                firmware=item["firmware"]["S"],
                pending_credits=int(item["pending_credits"]["N"]),
            )
            for item in self._query_kind("cabinet")
        ]
        return sorted(found, key=lambda cabinet: cabinet.machine_id)

    def ping(self) -> None:
        # A data-plane read of a key that never exists: proves table, credentials and network.
        self._get("ping")

    # --- plumbing ---------------------------------------------------------------------------

    def _get(self, key: str) -> dict[str, Any] | None:
        response = self.client.get_item(
            TableName=self.table_name, Key={"pk": _s(key)}, ConsistentRead=True
        )
        return response.get("Item")

    def _update(
        self, session_id: str, update: str, condition: str, values: dict[str, Any]
    ) -> dict[str, Any] | None:
        """One conditional UpdateItem on a payment: None when applied, else the item as it is
        ({} if there is none)."""
        key = _session_key(session_id)
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": {"pk": _s(key)},
            "UpdateExpression": update,
            "ConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if "#state" in update or "#state" in condition:
            request["ExpressionAttributeNames"] = {"#state": "state"}  # a reserved word
        try:
            self.client.update_item(**request)
        except self.client.exceptions.ConditionalCheckFailedException as error:
            item = getattr(error, "response", {}).get("Item")
            # Older endpoints may not return the item: read it, consistently.
            return item if item is not None else (self._get(key) or {})
        return None


def _session_key(session_id: str) -> str:
    return f"session#{session_id}"


def _link_key(machine_id: str, price_id: str) -> str:
    return f"link#{machine_id}#{price_id}"


def _s(value: str) -> dict[str, str]:
    return {"S": str(value)}


def _n(value: float | int) -> dict[str, str]:
    return {"N": repr(value)}  # repr round-trips a float exactly


def _payment_fields(payment: Payment, now: float) -> dict[str, dict[str, str]]:
    """A new record's attributes; None values are left out (index keys may not be NULL)."""
    fields = {
        "session_id": _s(payment.session_id),
        "machine_id": _s(payment.machine_id),
        "credits": _n(int(payment.credits)),
        "created_at": _n(now),
    }
    if payment.amount is not None:
        fields["amount"] = _n(int(payment.amount))
    if payment.currency is not None:
        fields["currency"] = _s(payment.currency)
    if payment.payment_intent:
        fields["payment_intent"] = _s(payment.payment_intent)
    return fields


def _state(item: dict[str, Any]) -> State | None:
    raw = item.get("state", {}).get("S")
    return State(raw) if raw else None


def _number(item: dict[str, Any], name: str) -> float | None:
    raw = item.get(name, {}).get("N")
    return float(raw) if raw is not None else None


def _text(item: dict[str, Any], name: str) -> str | None:
    return item.get(name, {}).get("S")


def _payment(item: dict[str, Any]) -> Payment:
    amount = _number(item, "amount")
    return Payment(
        session_id=item["session_id"]["S"],
        machine_id=item["machine_id"]["S"],
        credits=int(item["credits"]["N"]),
        amount=int(amount) if amount is not None else None,
        currency=_text(item, "currency"),
        payment_intent=_text(item, "payment_intent"),
        state=State(item["state"]["S"]),
        created_at=_number(item, "created_at") or 0.0,
        updated_at=_number(item, "updated_at") or 0.0,
        published_at=_number(item, "published_at"),
        acked_at=_number(item, "acked_at"),
    )
