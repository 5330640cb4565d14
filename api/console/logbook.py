"""The audit log (who did what, when and why) and the alerts (every incident, sent or not)."""

from __future__ import annotations

from api.console import bp
from api.console.pages import render_page
from api.services import services


@bp.get("/audit")
def audit_log():
    return render_page("console/audit.html", entries=services().store.audit_log(limit=300))


@bp.get("/alerts")
def alerts():
    svc = services()
    return render_page("console/alerts.html", incidents=svc.store.incidents(limit=200),
                       webhook=bool(svc.settings.alert_webhook_url),
                       offline_minutes=svc.settings.alert_offline_minutes)
