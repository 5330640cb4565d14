"""Money: takings per day / week / month for the fleet and per cabinet, by currency, refunds
and disputes subtracted, comp credits apart; a chart, tables, and CSV files for the accountant."""

from __future__ import annotations

import csv
import io
import time
from datetime import date, timedelta

from flask import Response, abort, request

from api.console import bp, charts
from api.console.pages import local, money, render_page, zone
from api.console.payments import query_from
from api.services import services
from api.store_console import (
    GRANULARITIES,
    Periods,
    Total,
    is_comp,
    money_of,
    periods_of,
    start_of,
)

SPAN = {"day": 30, "week": 12, "month": 12}  # periods on the chart and in the table
CSV_MAX_DAYS = 366
TOP_CABINETS = 100
CSV_MAX_PAYMENTS = 100_000


def periods_back(now: float, granularity: str, count: int) -> list[Periods]:
    """The last `count` periods up to the one holding `now`, oldest first."""
    tz = zone()
    current = periods_of(now, tz)
    found = [current]
    while len(found) < count:
        found.append(periods_of(found[-1].start(granularity) - 1, tz))
    return found[::-1]


def merged(rows: list[Total]) -> dict[tuple[str, str], Total]:
    return {(row.period, row.currency): row for row in rows}


@bp.get("/money")
def money_page():
    granularity = request.args.get("by", "day")
    if granularity not in GRANULARITIES:
        abort(400, "by must be day, week or month")
    now = time.time()
    periods = periods_back(now, granularity, SPAN[granularity])
    keys = [p.key(granularity) for p in periods]
    selected = request.args.get("period") or keys[-1]
    if selected not in keys:
        abort(400, "period must be one of the periods shown")
    store = services().store
    series = store.fleet_series(granularity, periods[0], periods[-1])
    by_key = merged(series)
    currencies = sorted({row.currency for row in series if row.currency}) or ["usd"]
    chart_list = [
        charts.bar_chart([(key, by_key.get((key, c), Total("*", key, c)).net) for key in keys],
                         f"Net takings per {granularity} ({c.upper()})",
                         lambda cents, c=c: money(cents, c),
                         label_every=5 if granularity == "day" else 2)
        for c in currencies
    ]
    table = [row for key in reversed(keys) for row in series if row.period == key]
    cabinets = store.period_totals(granularity, selected)
    totals = sum_by_currency(cabinets)
    everything = request.args.get("all") == "1"
    if not everything:  # the best 100 on the page; ?all=1 or the CSV for every cabinet
        cabinets = sorted(cabinets, key=lambda t: (-t.net, t.machine_id))[:TOP_CABINETS]
    return render_page(
        "console/money.html", granularity=granularity, charts=chart_list, table=table,
        cabinets=cabinets, selected=selected, keys=keys, currencies=currencies,
        totals=totals, everything=everything, top=TOP_CABINETS,
    )


def sum_by_currency(rows: list[Total]) -> list[Total]:
    sums: dict[str, Total] = {}
    for row in rows:
        total = sums.setdefault(row.currency, Total("*", row.period, row.currency))
        for name in ("gross", "refunded", "disputed", "payments", "credits", "comp_credits",
                     "gameovers"):
            setattr(total, name, getattr(total, name) + getattr(row, name))
    return [sums[c] for c in sorted(sums)]


def csv_response(rows: list[list], name: str) -> Response:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return Response(buffer.getvalue(), mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="{name}"'})


def cents(value: int | None) -> str:
    return "" if value is None else f"{value / 100:.2f}"


def date_range(args) -> tuple[date, date]:
    today = date.fromisoformat(periods_of(time.time(), zone()).day)
    try:
        last = date.fromisoformat(args.get("to") or today.isoformat())
        first = date.fromisoformat(args.get("from") or (last - timedelta(days=29)).isoformat())
    except ValueError:
        abort(400, "from and to are dates: YYYY-MM-DD")
    if first > last or (last - first).days >= CSV_MAX_DAYS:
        abort(400, f"from must be before to, at most {CSV_MAX_DAYS} days apart")
    return first, last


@bp.get("/money/daily.csv")
def daily_csv():
    """One line per day, cabinet and currency: what the accountant books."""
    first, last = date_range(request.args)
    store = services().store
    rows = [["day", "cabinet", "currency", "gross", "refunded", "disputed", "net", "payments",
             "credits", "comp_credits", "game_overs"]]
    day = first
    while day <= last:
        for t in store.period_totals("day", day.isoformat()):
            rows.append([t.period, t.machine_id, t.currency.upper(), cents(t.gross),
                         cents(t.refunded), cents(t.disputed), cents(t.net), t.payments,
                         t.credits, t.comp_credits, t.gameovers])
        day += timedelta(days=1)
    return csv_response(rows, f"arcade-daily-{first}-{last}.csv")


@bp.get("/payments.csv")
def payments_csv():
    query, error = query_from(request.args)
    if error:
        abort(400, error)
    if query.start is None:
        first, _ = date_range(request.args)
        query.start = start_of(first, zone())
    query.limit = CSV_MAX_PAYMENTS
    rows = [["created", "kind", "session_id", "cabinet", "credits", "amount", "currency",
             "state", "refunded", "payment_intent", "published", "done"]]
    for p in services().store.search_payments(query):
        rows.append([local(p.created_at), "comp" if is_comp(p.session_id) else "payment",
                     p.session_id, p.machine_id, p.credits, cents(p.amount),
                     (p.currency or "").upper(), str(p.state), cents(money_of(p).refunded),
                     p.payment_intent or "", local(p.published_at) if p.published_at else "",
                     local(p.done_at) if p.done_at else ""])
    return csv_response(rows, "arcade-payments.csv")
