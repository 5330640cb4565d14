"""The console in a real headless Chromium, as staff use it: sign in, watch the fleet, follow a
test-checkout payment to `acked` without reloading, resend, refund, comp, download the CSV files,
see a stopped cabinet go offline and its alert arrive once. axe-core checks every page; the
screenshots (phone 390×844, desktop 1440×900) are saved under build/screenshots."""

from __future__ import annotations

import csv
import io
import json
import queue
import subprocess
import threading
from pathlib import Path

import pytest

from api.console.auth import hash_password
from api.store_sqlite import SQLiteStore
from tests.conftest import REPO
from tests.console.conftest import OPERATOR, PASSWORD, SECRET_KEY
from tests.e2e.conftest import make_site  # noqa: F401  (the end-to-end rig)
from tests.e2e.test_browser import require_browser

pytestmark = [pytest.mark.slow, pytest.mark.browser]

HERE = REPO / "tests" / "e2e"
SHOTS = REPO / "build" / "screenshots"
PHONE, DESKTOP = (390, 844), (1440, 900)


class Browser:
    """browser_remote.mjs: one JSON command, one JSON answer."""

    def __init__(self, node: str, profile: Path) -> None:
        self.process = subprocess.Popen(
            [node, str(HERE / "browser_remote.mjs"), str(profile)], cwd=REPO, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.answers: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.answers.put(line)

    def do(self, action: str, timeout: float = 60, **args) -> dict:
        self.process.stdin.write(json.dumps({"do": action, **args}) + "\n")
        self.process.stdin.flush()
        while True:
            line = self.answers.get(timeout=timeout)
            if line.startswith("{"):
                answer = json.loads(line)
                assert answer["ok"], f"{action} {args}: {answer['error']}"
                return answer

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.write('{"do": "quit"}\n')
            self.process.stdin.flush()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()


def check_accessibility(browser: Browser, name: str) -> None:
    violations = browser.do("axe")["violations"]
    serious = [v for v in violations if v["impact"] in ("serious", "critical")]
    assert serious == [], f"{name}: {json.dumps(serious, indent=1)}"


def shoot(browser: Browser, name: str, size: tuple[int, int], full: bool = False) -> Path:
    path = SHOTS / f"{name}.png"
    browser.do("shot", path=str(path), width=size[0], height=size[1], full=full)
    assert path.stat().st_size > 5_000
    return path


def test_the_console_in_a_real_browser(make_site, tmp_path, stripe_api, alert_receiver):  # noqa: F811
    node = require_browser()
    SHOTS.mkdir(parents=True, exist_ok=True)
    site = make_site(
        CONSOLE_SECRET_KEY=SECRET_KEY, STRIPE_API_KEY="sk_test_console",
        STRIPE_API_BASE=stripe_api.url, ALERT_WEBHOOK_URL=alert_receiver.url,
        ALERT_OFFLINE_MINUTES="0", MACHINE_IDS="cab-a,cab-b", SWEEP_INTERVAL_S="2",
    )
    SQLiteStore(site.settings["STORE_URL"].removeprefix("sqlite:///")).put_operator(
        OPERATOR, hash_password(PASSWORD), 0.0)
    cab_a, cab_b = site.start_cabinets(["cab-a", "cab-b"])
    site.start_listener()
    # The player's test checkout pays for free, so it never runs beside a Stripe key: it gets an
    # API of its own on the same ledger and broker. The operator's API has the key (refunds go to
    # the Stripe stand-in) and is the one the site's signed webhooks reach.
    player_api = site.start_api(TEST_CHECKOUT="true", STRIPE_API_KEY="")
    api = site.start_api()
    # localhost: Chromium keeps a Secure cookie on http only for a local host.
    base = api.url.replace("127.0.0.1", "localhost")
    browser = Browser(node, tmp_path / "profile")
    try:
        # --- sign in; signed out, nothing opens ----------------------------------------------
        assert browser.do("fetch", url=f"{base}/console/payments.csv")["status"] == 401
        opened = browser.do("goto", url=f"{base}/console/")
        assert "/console/sign-in" in opened["url"]
        check_accessibility(browser, "sign-in")
        browser.do("fill", label="Name", value=OPERATOR)
        browser.do("fill", label="Password", value=PASSWORD)
        assert browser.do("click", button="Sign in")["url"].rstrip("/") == f"{base}/console"

        # --- the fleet: both cabinets online ---------------------------------------------------
        fleet = browser.do("wait_text", selector="#live", text="2 of 2 online")["text"]
        assert "cab-a" in fleet and "cab-b" in fleet and "no problems" in fleet
        check_accessibility(browser, "fleet")
        shoot(browser, "fleet-phone", PHONE)
        shoot(browser, "fleet-desktop", DESKTOP)

        # --- pay with the test checkout: the payment appears and turns acked, no reload -------
        browser.do("goto", url=f"{base}/console/payments")
        browser.do("shot", path=str(SHOTS / "payments-empty.png"), width=PHONE[0],
                   height=PHONE[1])
        browser.do("goto", page="player", url=f"{player_api.url}/test-checkout/cab-a")
        browser.do("click", page="player", selector="#pay")
        listing = browser.do("wait_text", selector="#payments", text="cs_test_local_")["text"]
        [payment] = site.store().payments("cab-a")
        assert payment.session_id in listing
        browser.do("wait_text", selector="#payments tbody tr", text="done")
        cab_a.wait_count("pulse", 1)
        check_accessibility(browser, "payments")
        shoot(browser, "payments-phone", PHONE)

        # --- the payment's page: a delivered credit is neither resent nor refunded here -------
        browser.do("goto", url=f"{base}/console/payments/{payment.session_id}")
        page = browser.do("text", selector="main")["text"]
        assert "Timeline" in page and "published" in page and payment.session_id in page
        check_accessibility(browser, "payment")
        shoot(browser, "payment-phone", PHONE, full=True)
        browser.do("fill", selector="#resend-reason", value="player says nothing happened")
        browser.do("click", button="Resend the credits")
        assert "Publish the 1 credit(s)" in browser.do("text", selector="#question")["text"]
        check_accessibility(browser, "confirm")
        browser.do("click", button="Yes, resend")
        browser.do("wait_text", selector=".flash", text="Not done: nothing to resend")
        browser.do("fill", selector="#refund-reason", value="goodwill")
        browser.do("click", button="Refund the player")
        browser.do("click", button="Yes, refund")
        browser.do("wait_text", selector=".flash", text="Not done: nothing to refund")
        assert stripe_api.calls("POST", "/v1/refunds") == []
        # A POST without the form's CSRF token is refused.
        refused = browser.do("post", url=f"{base}/console/actions/comp",
                             form={"subject": "cab-a", "credits": "1", "reason": "x",
                                   "confirmed": "yes"})
        assert refused["status"] == 400

        # --- comp credits on cab-a: the cabinet pulses them ----------------------------------
        browser.do("goto", url=f"{base}/console/cabinets/cab-a")
        check_accessibility(browser, "cabinet")
        browser.do("fill", selector="#comp-credits", value="2")
        browser.do("fill", selector="#comp-reason", value="coin jam")
        browser.do("click", button="Put free credits on cab-a")
        browser.do("click", button="Yes, put the credits on")
        done = browser.do("wait_text", selector=".flash", text="Done: 2 comp credit(s)")["text"]
        comp_id = done.split("published as ")[1].split(".")[0].strip()
        assert comp_id.startswith("comp_")
        pulses = cab_a.wait_for(lambda events: [e for e in events if e["event"] == "pulse"
                                                and e["id"] == comp_id][1:], what="2 comp pulses")
        assert pulses
        assert [e["id"] for e in cab_a.of("pulse")].count(payment.session_id) == 1

        # --- money and the accountant's CSV files --------------------------------------------
        browser.do("goto", url=f"{base}/console/money")
        money = browser.do("text", selector="main")["text"]
        # paid 1.00, nothing refunded or disputed; the comp credits on their own line
        assert "Total\tUSD\t1.00 USD\t0.00 USD\t0.00 USD\t1.00 USD\t1\t0" in money
        assert "Total\tcomp\t" in money
        check_accessibility(browser, "money")
        shoot(browser, "money-desktop", DESKTOP, full=True)
        shoot(browser, "money-phone", PHONE)
        payments_csv = browser.do("fetch", url=f"{base}/console/payments.csv")
        assert payments_csv["type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(payments_csv["body"])))
        by_id = {row["session_id"]: row for row in rows}
        assert by_id[payment.session_id]["state"] == "done"
        assert by_id[comp_id]["kind"] == "comp" and by_id[comp_id]["credits"] == "2"
        daily = list(csv.DictReader(io.StringIO(
            browser.do("fetch", url=f"{base}/console/money/daily.csv")["body"])))
        usd = [row for row in daily if row["cabinet"] == "cab-a" and row["currency"] == "USD"]
        assert (usd[0]["gross"], usd[0]["refunded"], usd[0]["net"]) == ("1.00", "0.00", "1.00")
        assert any(row["comp_credits"] == "2" for row in daily if row["cabinet"] == "cab-a")
        for name in ("audit", "alerts"):
            browser.do("goto", url=f"{base}/console/{name}")
            check_accessibility(browser, name)
        browser.do("goto", url=f"{base}/console/audit")
        audit = browser.do("text", selector="#audit")["text"]
        assert "coin jam" in audit and "refund" in audit and OPERATOR in audit

        # --- stop cab-b while a credit is owed: offline on the fleet, one alert ---------------
        browser.do("goto", url=f"{base}/console/")
        cab_b.stop()
        site.paid.setdefault("cab-b", {})
        owed = site.pay("cab-b")
        fleet = browser.do("wait_text", selector="#live",
                           text="offline with 1 credit(s) owed")["text"]
        assert "1 of 2 online" in fleet and fleet.index("cab-b") < fleet.index("cab-a")
        shoot(browser, "fleet-offline-phone", PHONE)
        alert = alert_receiver.bodies.get(timeout=30)["json"]
        assert alert["alert"]["kind"] == "offline_owed" and alert["alert"]["subject"] == "cab-b"
        assert "cab-b is offline" in alert["text"]
        site.listener.output.wait_count("alert sent: offline:cab-b", 1)
        with pytest.raises(queue.Empty):  # two more sweeps (5 s apart) send nothing new
            alert_receiver.bodies.get(timeout=11)
        browser.do("goto", url=f"{base}/console/alerts")
        assert "cab-b is offline" in browser.do("text", selector="#alerts")["text"]

        # --- refund the owed credit through Stripe's stand-in; the money page subtracts it ----
        browser.do("goto", url=f"{base}/console/payments/{owed['id']}")
        browser.do("fill", selector="#refund-reason", value="cabinet broken, player left")
        browser.do("click", button="Refund the player")
        assert "Refund 1.00 USD" in browser.do("text", selector="#question")["text"]
        browser.do("click", button="Yes, refund")
        browser.do("wait_text", selector=".flash", text="Done: refunded 1.00 USD")
        [refund] = stripe_api.calls("POST", "/v1/refunds")
        assert refund["form"]["payment_intent"] == owed["payment_intent"]
        assert refund["headers"]["Idempotency-Key"] == f"arcade-refund-{owed['id']}"
        browser.do("goto", url=f"{base}/console/money")
        money = browser.do("text", selector="main")["text"]
        assert "Total\tUSD\t2.00 USD\t1.00 USD\t0.00 USD\t1.00 USD\t2\t0" in money
        site.paid.clear()  # checked above, part by part

        # --- sign out: the console closes again ----------------------------------------------
        browser.do("goto", url=f"{base}/console/")
        browser.do("click", button=f"Sign out {OPERATOR}")
        assert browser.do("fetch", url=f"{base}/console/money/daily.csv")["status"] == 401
    finally:
        browser.close()
