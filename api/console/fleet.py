"""The fleet (every cabinet, problems first, refreshing itself) and one cabinet's page."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, timedelta

from flask import abort, request, url_for

from api.console import bp, charts
from api.console.pages import money, render_page, zone
from api.machines import is_valid_machine_id
from api.services import services
from api.store import Cabinet, Payment
from api.store_console import LastPayment, Total, periods_of

OWED_WINDOW_SECONDS = 3600  # credits owed: payments of the last hour not yet delivered


@dataclass
class FleetRow:
    machine_id: str
    cabinet: Cabinet | None
    owed: int = 0
    today: list[Total] = field(default_factory=list)
    last_payment: LastPayment | None = None
    retired: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def online(self) -> bool:
        return self.cabinet is not None and self.cabinet.state == "online"

    @property
    def rank(self) -> tuple:
        return (self.retired, not self.problems, self.online, self.machine_id)


def problems_of(row: FleetRow, now: float, offline_minutes: int) -> list[str]:
    problems = []
    cabinet = row.cabinet
    if cabinet is None:
        problems.append("never seen")
    elif cabinet.state != "online":
        owed = row.owed + cabinet.pending_credits
        if owed:
            problems.append(f"offline with {owed} credit(s) owed")
        elif now - cabinet.last_seen > offline_minutes * 60:
            problems.append("offline")
    if cabinet is not None and getattr(cabinet, "problem", ""):
        problems.append(str(cabinet.problem))
    return problems


def fleet_rows(now: float) -> list[FleetRow]:
    """One fixed set of reads whatever the fleet's size: cabinets, today's totals, last
    payments, credits owed, retired."""
    svc = services()
    store, settings = svc.store, svc.settings
    cabinets = {cabinet.machine_id: cabinet for cabinet in store.cabinets()}
    today = periods_of(now, zone()).day
    totals: dict[str, list[Total]] = {}
    for total in store.period_totals("day", today):
        if total.currency:
            totals.setdefault(total.machine_id, []).append(total)
    last = store.last_payments()
    owed = store.owed_by_cabinet(now - OWED_WINDOW_SECONDS)
    retired = store.retired()
    names = set(cabinets) | set(settings.machine_ids) | set(last)
    rows = []
    for machine_id in names:
        row = FleetRow(machine_id, cabinets.get(machine_id), owed.get(machine_id, 0),
                       totals.get(machine_id, []), last.get(machine_id), machine_id in retired)
        if not row.retired:
            row.problems = problems_of(row, now, settings.alert_offline_minutes)
        rows.append(row)
    return sorted(rows, key=lambda row: row.rank)


PER_PAGE = 100  # a phone gets 100 cabinets at a time; problems always come first


@bp.get("", strict_slashes=False)
def fleet():
    now = time.time()
    rows = fleet_rows(now)
    active = [row for row in rows if not row.retired]
    summary = {
        "cabinets": len(active),
        "online": sum(row.online for row in active),
        "problems": sum(bool(row.problems) for row in active),
    }
    search = request.args.get("q", "").strip()
    if search:
        rows = [row for row in rows if search.lower() in row.machine_id.lower()]
    pages = max(1, -(-len(rows) // PER_PAGE))
    page = min(max(1, request.args.get("page", 1, type=int)), pages)
    return render_page(
        "console/fleet.html", rows=rows[(page - 1) * PER_PAGE:page * PER_PAGE], now=now,
        summary=summary, page=page, pages=pages, search=search, shown=len(rows),
        # Links built once, not per row (a thousand url_for calls cost more than the queries).
        cabinet_base=url_for("console.cabinet", machine_id="_")[:-1],
        payment_base=url_for("console.payment", session_id="_")[:-1],
    )


def machine_or_404(machine_id: str) -> str:
    if not is_valid_machine_id(machine_id):
        abort(404, "No such cabinet.")
    return machine_id


def last_days(today: date, count: int) -> list[str]:
    return [(today - timedelta(days=back)).isoformat() for back in range(count - 1, -1, -1)]


def takings_by_day(machine_id: str, days: list[str]) -> tuple[dict, dict]:
    """{day: {currency: net}} and {day: game overs} of one cabinet."""
    net: dict[str, dict[str, int]] = {}
    gameovers: dict[str, int] = {}
    for total in services().store.cabinet_series(machine_id, "day", days):
        if total.currency:
            net.setdefault(total.period, {})[total.currency] = total.net
        gameovers[total.period] = gameovers.get(total.period, 0) + total.gameovers
    return net, gameovers


def hourly_takings(payments: list[Payment], currency: str) -> list[tuple[str, int]]:
    from api.store_console import money_of

    hours = [0] * 24
    for payment in payments:
        counted = money_of(payment)
        if counted.currency == currency:
            hours[_local_hour(payment.created_at)] += (
                counted.gross - counted.refunded - counted.disputed
            )
    return [(f"{hour:02d}", value) for hour, value in enumerate(hours)]


def _local_hour(stamp: float) -> int:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(stamp, UTC).astimezone(zone()).hour


@bp.get("/cabinets/<machine_id>")
def cabinet(machine_id: str):
    machine_or_404(machine_id)
    svc = services()
    store = svc.store
    now = time.time()
    periods = periods_of(now, zone())
    days = last_days(date.fromisoformat(periods.day), 30)
    net, gameovers = takings_by_day(machine_id, days)
    currencies = sorted({c for by_currency in net.values() for c in by_currency}) or ["usd"]
    today_payments = store.payments_between(machine_id, periods.day_start, now + 1)
    charts_by_currency = [
        (
            currency,
            charts.bar_chart([(day[5:], net.get(day, {}).get(currency, 0)) for day in days],
                             f"Takings per day, last 30 days ({currency.upper()})",
                             lambda cents, c=currency: money(cents, c), label_every=5),
            charts.bar_chart(hourly_takings(today_payments, currency),
                             f"Takings per hour today ({currency.upper()})",
                             lambda cents, c=currency: money(cents, c), label_every=3),
        )
        for currency in currencies
    ]
    row = next((r for r in fleet_rows(now) if r.machine_id == machine_id), None)
    if row is None and not store.payments(machine_id=machine_id, limit=1):
        abort(404, "No such cabinet: it has never reported and has no payments.")
    return render_page(
        "console/cabinet.html", machine_id=machine_id, row=row, now=now,
        payments=store.payments(machine_id=machine_id, limit=50),
        charts=charts_by_currency, gameovers_today=gameovers.get(periods.day, 0),
        gameovers_30=sum(gameovers.values()), config=config_summary(machine_id),
        qr_url=url_for("console.cabinet_qr", machine_id=machine_id),
    )


def config_summary(machine_id: str) -> list[tuple[str, str]]:
    settings = services().settings
    cabinet = next((c for c in services().store.cabinets() if c.machine_id == machine_id), None)
    return [
        ("Topic prefix", settings.mqtt_topic_prefix),
        ("Credits per message (API)", str(settings.max_credits_per_message)),
        ("Cents per credit", str(settings.cents_per_credit)),
        ("Credits per purchase", str(settings.credits_per_purchase or "from the price")),
        ("Price", settings.price_id or ("test checkout" if settings.test_checkout else "–")),
        ("Firmware", cabinet.firmware if cabinet and cabinet.firmware else "–"),
        ("Allowed by MACHINE_IDS", "yes" if settings.machine_allowed(machine_id) else "no"),
    ]


def payment_url(machine_id: str) -> str:
    """The link the cabinet's sticker encodes: as POST /create-payment-link gives it."""
    from api import test_checkout
    from api.payments import payment_link_for

    svc = services()
    if svc.settings.test_checkout:
        return test_checkout.checkout_url(machine_id)
    if not svc.settings.price_id:
        abort(503, "PRICE_ID is not set: there is no payment link to print.")
    return payment_link_for(svc.store, svc.settings, machine_id, svc.settings.price_id)


@bp.get("/cabinets/<machine_id>/qr.svg")
def cabinet_qr(machine_id: str):
    from api.payments import PaymentsError
    from api.qrcode import svg_with_label

    machine_or_404(machine_id)
    try:
        url = payment_url(machine_id)
    except PaymentsError as error:
        abort(502, f"Stripe: {error}")
    headers = {"Content-Type": "image/svg+xml"}
    if request.args.get("download"):
        headers["Content-Disposition"] = f'attachment; filename="{machine_id}-qr.svg"'
    return svg_with_label(url, machine_id), 200, headers
