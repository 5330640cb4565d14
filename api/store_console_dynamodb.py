"""The console's items in the DynamoDB ledger (see api/store_console.py), mixed into DynamoDBStore.

No page view scans the table. Every list is a Query of the existing `by_created` index, whose
partition key `kind` names what is listed:

- `operator`, `audit`, `incident`, `retired`, `cabinet`: one partition each, sorted by time.
- `day#2026-12-01`, `week#2026-11-30`, `month#2026-12`: one item per cabinet with its totals in
  that period (the fleet page reads today's partition: one Query for every cabinet's takings).
- `fleet#day`, `fleet#week`, `fleet#month`: the fleet's totals, one item per period, sorted by
  the period's start (the money page's chart and table: one Query).

Totals items (`total#<granularity>#<period>#<machine or *>`) carry one attribute per counter and
currency (`gross_usd`, `refunded_eur`, `comp_credits_`, `gameovers_`). They are changed only in a
transaction with the payment's `counted#<session>` item, whose version guards against two workers
counting the same change; a lost race re-reads the payment and counts the difference again.
Totals items never carry `machine_id` or `payment_intent`, so they stay out of the payment
indexes.
"""

from __future__ import annotations

import secrets
from typing import Any
from zoneinfo import ZoneInfo

from api.store import Payment
from api.store_console import (
    GRANULARITIES,
    MONEY_FIELDS,
    AfterChange,
    AuditEntry,
    Incident,
    LastPayment,
    Money,
    Operator,
    PaymentLists,
    Periods,
    Total,
    money_of,
    periods_of,
)

_COUNTERS = (*MONEY_FIELDS, "gameovers")
FLEET = "*"
SEARCH_PAGES = 10  # a filtered search reads at most this many index pages


def _s(value: str) -> dict[str, str]:
    return {"S": str(value)}


def _n(value: float | int) -> dict[str, str]:
    return {"N": repr(value)}


def _num(item: dict[str, Any], name: str, default: float = 0) -> float:
    raw = item.get(name, {}).get("N")
    return float(raw) if raw is not None else default


def _str(item: dict[str, Any], name: str, default: str = "") -> str:
    return item.get(name, {}).get("S", default)


def total_key(granularity: str, period: str, machine_id: str) -> str:
    return f"total#{granularity}#{period}#{machine_id}"


class ConsoleDynamoDB(AfterChange, PaymentLists):
    """Mixin for DynamoDBStore: needs its `client`, `table_name`, `get` and `_get`."""

    owed_scan_limit = 5000  # fewer Query pages per fleet view

    # --- plumbing ---------------------------------------------------------------------------
    def _query_kind(
        self, kind: str, limit: int | None = None, newest_first: bool = True,
        between: tuple[float, float] | None = None, filters: dict | None = None,
        max_pages: int | None = None,
    ) -> list[dict[str, Any]]:
        """Items of one `by_created` partition, paginated; never a Scan."""
        condition = "kind = :kind"
        values: dict[str, Any] = {":kind": _s(kind)}
        if between is not None:
            condition += " AND created_at BETWEEN :lo AND :hi"
            values |= {":lo": _n(between[0]), ":hi": _n(between[1])}
        query: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": "by_created",
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": not newest_first,
        }
        if filters:
            query["FilterExpression"] = filters["expression"]
            query["ExpressionAttributeValues"] = values | filters["values"]
            query["ExpressionAttributeNames"] = filters.get("names", {})
        return self._paginate(query, limit, max_pages)

    def _paginate(self, query: dict, limit: int | None, max_pages: int | None) -> list[dict]:
        found: list[dict[str, Any]] = []
        pages = 0
        while limit is None or len(found) < limit:
            request = dict(query)
            if limit is not None and "FilterExpression" not in query:
                request["Limit"] = limit - len(found)
            response = self.client.query(**request)
            found += response.get("Items", [])
            pages += 1
            if "LastEvaluatedKey" not in response or (max_pages and pages >= max_pages):
                break
            query["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return found[:limit] if limit is not None else found

    def _put_new(self, item: dict[str, Any]) -> bool:
        try:
            self.client.put_item(
                TableName=self.table_name, Item=item, ConditionExpression="attribute_not_exists(pk)"
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def _conditional_update(self, key: str, update: str, condition: str, values: dict,
                            names: dict | None = None) -> bool:
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": {"pk": _s(key)},
            "UpdateExpression": update,
            "ConditionExpression": condition,
            "ExpressionAttributeValues": values,
        }
        if names:
            request["ExpressionAttributeNames"] = names
        try:
            self.client.update_item(**request)
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    # --- operators --------------------------------------------------------------------------
    def put_operator(self, name: str, password_hash: str, now: float) -> None:
        self.client.update_item(
            TableName=self.table_name,
            Key={"pk": _s(f"operator#{name}")},
            UpdateExpression="SET operator_name = :name, password_hash = :hash, kind = :kind,"
            " created_at = if_not_exists(created_at, :now)",
            ExpressionAttributeValues={
                ":name": _s(name), ":hash": _s(password_hash), ":kind": _s("operator"),
                ":now": _n(now),
            },
        )

    def operator_hash(self, name: str) -> str | None:
        item = self._get(f"operator#{name}")
        return _str(item, "password_hash") or None if item else None

    def operators(self) -> list[Operator]:
        items = self._query_kind("operator", newest_first=False)
        found = [Operator(_str(item, "operator_name"), _num(item, "created_at")) for item in items]
        return sorted(found, key=lambda operator: operator.name)

    def remove_operator(self, name: str) -> bool:
        response = self.client.delete_item(
            TableName=self.table_name, Key={"pk": _s(f"operator#{name}")}, ReturnValues="ALL_OLD"
        )
        return "Attributes" in response

    # --- sign-in limit ----------------------------------------------------------------------
    def count_failure(self, key: str, window: int, expires: float) -> int:
        response = self.client.update_item(
            TableName=self.table_name,
            Key={"pk": _s(f"loginfail#{key}#{window}")},
            # A disposable item: TTL removes it (see store_dynamodb: only such items carry it).
            UpdateExpression="ADD failures :one SET expires_at = :expires",
            ExpressionAttributeValues={":one": _n(1), ":expires": _n(int(expires))},
            ReturnValues="UPDATED_NEW",
        )
        return int(_num(response["Attributes"], "failures"))

    def failures(self, key: str, window: int) -> int:
        item = self._get(f"loginfail#{key}#{window}")
        return int(_num(item, "failures")) if item else 0

    # --- audit ------------------------------------------------------------------------------
    def add_audit(self, entry: AuditEntry) -> None:
        self.client.put_item(
            TableName=self.table_name,
            Item={
                "pk": _s(f"audit#{entry.at!r}#{secrets.token_hex(4)}"),
                "kind": _s("audit"),
                "created_at": _n(entry.at),
                "operator": _s(entry.operator),
                "action": _s(entry.action),
                "subject": _s(entry.subject),
                "reason": _s(entry.reason),
                "result": _s(entry.result),
            },
        )

    def audit_log(self, limit: int = 200) -> list[AuditEntry]:
        return [
            AuditEntry(
                at=_num(item, "created_at"), operator=_str(item, "operator"),
                action=_str(item, "action"), subject=_str(item, "subject"),
                reason=_str(item, "reason"), result=_str(item, "result"),
            )
            for item in self._query_kind("audit", limit=limit)
        ]

    # --- incidents --------------------------------------------------------------------------
    def open_incident(self, incident: Incident) -> bool:
        return self._put_new({
            "pk": _s(f"incident#{incident.key}"),
            "kind": _s("incident"),
            "created_at": _n(incident.opened_at),
            "incident_key": _s(incident.key),
            "incident_kind": _s(incident.kind),
            "subject": _s(incident.subject),
            "message": _s(incident.message),
        })

    def claim_incident(self, key: str, now: float) -> bool:
        return self._conditional_update(
            f"incident#{key}", "SET sent_at = :now REMOVE send_error",
            "attribute_exists(pk) AND attribute_not_exists(sent_at)", {":now": _n(now)},
        )

    def incident_failed(self, key: str, error: str) -> None:
        self._conditional_update(
            f"incident#{key}", "SET send_error = :error REMOVE sent_at", "attribute_exists(pk)",
            {":error": _s(error)},
        )

    def incidents(self, limit: int = 100) -> list[Incident]:
        return [
            Incident(
                key=_str(item, "incident_key"), kind=_str(item, "incident_kind"),
                subject=_str(item, "subject"), message=_str(item, "message"),
                opened_at=_num(item, "created_at"),
                sent_at=_num(item, "sent_at", default=None) if "sent_at" in item else None,
                send_error=_str(item, "send_error"),
            )
            for item in self._query_kind("incident", limit=limit)
        ]

    # --- cabinets ---------------------------------------------------------------------------
    def set_retired(self, machine_id: str, retired: bool, now: float) -> None:
        key = {"pk": _s(f"retired#{machine_id}")}
        if retired:
            self._put_new({**key, "kind": _s("retired"), "created_at": _n(now),
                           "cabinet": _s(machine_id)})
        else:
            self.client.delete_item(TableName=self.table_name, Key=key)

    def retired(self) -> set[str]:
        return {_str(item, "cabinet") for item in self._query_kind("retired")}

    def count_gameover(self, machine_id: str, periods: Periods) -> None:
        self.client.transact_write_items(
            TransactItems=self._total_updates(machine_id, periods, "", {"gameovers": 1})
        )

    # --- money ------------------------------------------------------------------------------
    def count_money(self, session_id: str, tz: ZoneInfo) -> None:
        for _ in range(8):
            payment = self.get(session_id)
            if payment is None:
                return
            counted = self._get(f"counted#{session_id}")
            if self._count_once(payment, counted, tz):
                return
        raise RuntimeError(f"could not count the money of {session_id}: it keeps changing")

    def _count_once(self, payment: Payment, counted: dict | None, tz: ZoneInfo) -> bool:
        target = money_of(payment)
        before = Money(target.currency) if not counted else Money(
            target.currency, *(int(_num(counted, name)) for name in MONEY_FIELDS)
        )
        delta = target.minus(before)
        if delta.is_zero():
            return True
        version = int(_num(counted, "version")) if counted else 0
        item = {
            "pk": _s(f"counted#{payment.session_id}"),
            "version": _n(version + 1),
            **{name: _n(getattr(target, name)) for name in MONEY_FIELDS},
        }
        guard: dict[str, Any] = {"TableName": self.table_name, "Item": item}
        if counted:
            guard["ConditionExpression"] = "version = :version"
            guard["ExpressionAttributeValues"] = {":version": _n(version)}
        else:
            guard["ConditionExpression"] = "attribute_not_exists(pk)"
        periods = periods_of(payment.created_at, tz)
        add = {name: getattr(delta, name) for name in MONEY_FIELDS if getattr(delta, name)}
        updates = self._total_updates(payment.machine_id, periods, target.currency, add)
        try:
            self.client.transact_write_items(TransactItems=[{"Put": guard}, *updates])
        except self.client.exceptions.TransactionCanceledException:
            return False  # another worker counted first: read again and count the rest
        if delta.payments > 0:
            self._note_last_payment(payment, target.currency)
        return True

    def _note_last_payment(self, payment: Payment, currency: str) -> None:
        """The cabinet's newest payment, for the fleet page (only ever moves forward)."""
        values = {
            ":kind": _s("lastpay"), ":at": _n(payment.created_at), ":owner": _s(payment.machine_id),
            ":session": _s(payment.session_id), ":currency": _s(currency),
            ":amount": _n(payment.amount or 0),
        }
        self._conditional_update(
            f"lastpay#{payment.machine_id}",
            "SET kind = :kind, created_at = :at, cabinet = :owner, session_id = :session,"
            " amount = :amount, currency = :currency",
            "attribute_not_exists(created_at) OR created_at < :at", values,
        )

    def _total_updates(self, machine_id: str, periods: Periods, currency: str,
                       add: dict[str, int]) -> list[dict]:
        names = {f"#a{i}": f"{name}_{currency}" for i, name in enumerate(add)}
        values = {f":a{i}": _n(value) for i, value in enumerate(add.values())}
        adds = ", ".join(f"#a{i} :a{i}" for i in range(len(add)))
        updates = []
        for granularity in GRANULARITIES:
            period, start = periods.key(granularity), periods.start(granularity)
            for owner, kind in ((machine_id, f"{granularity}#{period}"),
                                (FLEET, f"fleet#{granularity}")):
                updates.append({"Update": {
                    "TableName": self.table_name,
                    "Key": {"pk": _s(total_key(granularity, period, owner))},
                    "UpdateExpression": f"SET kind = :kind, created_at = :start, cabinet = :owner,"
                    f" period = :period ADD {adds}",
                    "ExpressionAttributeNames": names,
                    "ExpressionAttributeValues": values | {
                        ":kind": _s(kind), ":start": _n(start), ":owner": _s(owner),
                        ":period": _s(period),
                    },
                }})
        return updates

    def period_totals(self, granularity: str, period: str) -> list[Total]:
        items = self._query_kind(f"{granularity}#{period}", newest_first=False)
        rows = [row for item in items for row in _totals(item)]
        return sorted(rows, key=lambda total: (total.machine_id, total.currency))

    def fleet_series(self, granularity: str, first: Periods, last: Periods) -> list[Total]:
        items = self._query_kind(
            f"fleet#{granularity}", newest_first=False,
            between=(first.start(granularity), last.start(granularity)),
        )
        return [row for item in items for row in _totals(item)]

    def cabinet_series(self, machine_id: str, granularity: str, periods: list[str]) -> list[Total]:
        keys = [total_key(granularity, period, machine_id) for period in periods]
        rows: list[Total] = []
        for start in range(0, len(keys), 100):  # BatchGetItem takes 100 keys
            request = {self.table_name: {"Keys": [{"pk": _s(k)} for k in keys[start:start + 100]]}}
            while request:
                response = self.client.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self.table_name, []):
                    rows += _totals(item)
                request = response.get("UnprocessedKeys") or {}
        return sorted(rows, key=lambda total: (total.period, total.currency))

    # --- payments ---------------------------------------------------------------------------
    def last_payments(self) -> dict[str, LastPayment]:
        return {
            _str(item, "cabinet"): LastPayment(
                _str(item, "cabinet"), _num(item, "created_at"), _str(item, "session_id"),
                int(_num(item, "amount")), _str(item, "currency"),
            )
            for item in self._query_kind("lastpay")
        }


def _totals(item: dict[str, Any]) -> list[Total]:
    """One Total per currency found in a totals item's `<counter>_<currency>` attributes."""
    by_currency: dict[str, dict[str, int]] = {}
    for name, value in item.items():
        for counter in _COUNTERS:
            if name.startswith(counter + "_") and "N" in value:
                currency = name[len(counter) + 1:]
                by_currency.setdefault(currency, {})[counter] = int(float(value["N"]))
                break
    return [
        Total(machine_id=_str(item, "cabinet"), period=_str(item, "period"), currency=currency,
              **counters)
        for currency, counters in sorted(by_currency.items())
    ]
