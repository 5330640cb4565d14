"""`arcade pay` and `arcade qr` against the real API served over HTTP."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.tools.conftest import OPERATOR_TOKEN, WEBHOOK_SECRET

CABINET_PASSWORD = "pw-machine_456"


@pytest.fixture
def cabinet(subscribe):
    return subscribe("arcade/machine/machine_456/coinpulse", user="machine_456",
                     password=CABINET_PASSWORD)


def test_pay_credits_reach_the_cabinet(arcade, api_server, cabinet):
    result = arcade("pay", "machine_456", "--credits", "3", "--api", api_server,
                    env={"STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET})

    assert result.exit_code == 0, result.output
    session_id = re.search(r"session (cs_test_\w+)", result.output).group(1)
    assert "the API answered 200" in result.output
    message = cabinet.next().json()
    assert message["machineId"] == "machine_456"
    assert message["credits"] == 3
    assert message["id"] == session_id


def test_pay_by_amount_lets_the_api_count_the_credits(arcade, api_server, cabinet):
    result = arcade("pay", "machine_456", "--amount", "250", "--api", api_server,
                    env={"STRIPE_WEBHOOK_SECRET": f"{WEBHOOK_SECRET},whsec_other",
                         "ARCADE_API_URL": "http://127.0.0.1:9/not-used"})

    assert result.exit_code == 0, result.output
    assert "paying 2.50 USD" in result.output
    assert cabinet.next().json()["credits"] == 2  # 250 cents at 100 per credit


def test_pay_uses_arcade_api_url(arcade, api_server, cabinet):
    result = arcade("pay", "machine_456", env={"STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
                                               "ARCADE_API_URL": api_server})

    assert result.exit_code == 0, result.output
    assert cabinet.next().json()["credits"] == 1


def test_pay_with_the_wrong_secret_is_refused_by_the_api(arcade, api_server, cabinet):
    result = arcade("pay", "machine_456", "--api", api_server,
                    env={"STRIPE_WEBHOOK_SECRET": "whsec_wrong"})

    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        "error: the API answered 400: invalid Stripe signature (wrong secret, altered body or "
        "stale timestamp)")
    assert "whsec_wrong" not in result.output


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["machine_456"], {}, "error: STRIPE_WEBHOOK_SECRET is not set (the API's webhook "
                              "secret, from .env; with `make run`: . run/activate in its folder "
                              "first)"),
        (["machine_456", "--credits", "2", "--amount", "200"],
         {"STRIPE_WEBHOOK_SECRET": "whsec_x"}, "error: give --credits or --amount, not both"),
        (["no/such"], {"STRIPE_WEBHOOK_SECRET": "whsec_x"},
         "error: invalid machine id 'no/such': use 1-64 letters, digits, '_' or '-'"),
    ],
)
def test_pay_mistakes_give_one_line(arcade, args, env, message):
    result = arcade("pay", *args, env=env)

    assert result.exit_code == 2
    assert result.output == message + "\n"


def test_pay_without_a_running_api_says_so(arcade):
    from tools.broker import free_port

    result = arcade("pay", "machine_456", "--api", f"http://127.0.0.1:{free_port()}",
                    env={"STRIPE_WEBHOOK_SECRET": "whsec_x"})

    assert result.exit_code == 2
    assert "error: cannot reach the API at http://127.0.0.1:" in result.output
    assert "is `arcade serve` running" in result.output


def decode_png(path) -> list[str]:
    import zxingcpp
    from PIL import Image

    return [code.text for code in zxingcpp.read_barcodes(Image.open(path))]


def test_qr_png_decodes_to_the_given_url(arcade, tmp_path):
    url = "https://buy.stripe.com/9AQ5mK0aB3?client_reference_id=machine_123"

    result = arcade("qr", "machine_123", "--url", url, "--out", "machine_123.png")

    assert result.exit_code == 0, result.output
    assert decode_png(tmp_path / "machine_123.png") == [url]


def test_qr_from_the_api_encodes_its_payment_link(arcade, api_server, tmp_path):
    result = arcade("qr", "cab-a", "--api", api_server, "--out", "cab-a.png", "--test",
                    env={"OPERATOR_TOKEN": OPERATOR_TOKEN})

    assert result.exit_code == 0, result.output
    [url] = decode_png(tmp_path / "cab-a.png")
    assert url.startswith("https://buy.stripe.com/test_plink_")
    assert url.endswith("client_reference_id=cab-a")
    assert url in result.output


def test_qr_sends_the_operator_token_from_dotenv(arcade, api_server, tmp_path):
    (tmp_path / ".env").write_text(f"OPERATOR_TOKEN={OPERATOR_TOKEN}\n")
    result = arcade("qr", "cab-a", "--api", api_server, "--out", "cab-a.png", "--test")
    assert result.exit_code == 0, result.output


def test_qr_without_the_operator_token_says_what_is_needed(arcade, api_server):
    result = arcade("qr", "cab-a", "--api", api_server, "--out", "cab-a.png", "--test")

    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        "error: the API answered 401: 'Authorization: Bearer <OPERATOR_TOKEN>' is required "
        "(arcade qr sends it from .env)")
    assert not (Path("cab-a.png")).exists()


def test_qr_svg_has_the_code_and_the_machine_id(arcade, tmp_path):
    import segno

    url = "https://buy.stripe.com/abc"
    result = arcade("qr", "cab-b", "--url", url, "--out", "cab-b.svg")

    assert result.exit_code == 0, result.output
    root = ET.parse(tmp_path / "cab-b.svg").getroot()
    svg = "{http://www.w3.org/2000/svg}"
    assert [text.text for text in root.iter(f"{svg}text")] == ["cab-b"]
    # The drawn modules are exactly segno's code for this URL.
    [drawn] = [path.get("d") for path in root.iter(f"{svg}path") if path.get("class") == "qrline"]
    reference = ET.fromstring(segno.make(url, error="m").svg_inline(border=4))  # no xmlns
    [expected] = [path.get("d") for path in reference.iter("path")]
    assert drawn == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cab-a", "--out", "x.png"],
         "error: give exactly one of --url or --api (or set ARCADE_API_URL)"),
        (["cab-a", "--url", "u", "--api", "a", "--out", "x.png"],
         "error: give exactly one of --url or --api (or set ARCADE_API_URL)"),
        (["cab-a", "--url", "https://x", "--out", "x.jpg"],
         "error: --out must end in .png or .svg, got 'x.jpg'"),
        (["cab-a", "--url", "buy.stripe.com/x", "--out", "x.png"],
         "error: --url must start with https:// (got 'buy.stripe.com/x')"),
        (["cab-a", "--url", "https://x", "--out", "no-such-folder/x.png"],
         "error: cannot write no-such-folder/x.png: No such file or directory"),
    ],
)
def test_qr_mistakes_give_one_line(arcade, args, message):
    result = arcade("qr", *args)

    assert result.exit_code == 2
    assert result.output == message + "\n"


def test_qr_shows_the_apis_reason_when_it_has_no_link(arcade, serve_api):
    api = serve_api(PRICE_ID="")

    result = arcade("qr", "cab-a", "--api", api, "--out", "x.png", "--test",
                    env={"OPERATOR_TOKEN": OPERATOR_TOKEN})

    assert result.exit_code == 1
    # (the in-process API's own log lines land in the same captured output)
    assert result.output.splitlines()[-1] == \
        "error: the API answered 503: PRICE_ID is not set on the server"


def test_qr_asks_the_api_named_by_arcade_api_url(arcade, api_server, tmp_path):
    result = arcade("qr", "cab-a", "--out", "cab-a.png", "--test",
                    env={"ARCADE_API_URL": api_server, "OPERATOR_TOKEN": OPERATOR_TOKEN})

    assert result.exit_code == 0, result.output
    [url] = decode_png(tmp_path / "cab-a.png")
    assert url.endswith("client_reference_id=cab-a")


def test_qr_url_wins_over_arcade_api_url(arcade, tmp_path):
    url = "https://buy.stripe.com/live123"
    result = arcade("qr", "cab-a", "--url", url, "--out", "cab-a.png",
                    env={"ARCADE_API_URL": "http://127.0.0.1:9/not-used"})

    assert result.exit_code == 0, result.output
    assert decode_png(tmp_path / "cab-a.png") == [url]


@pytest.mark.parametrize("url", [
    "http://192.168.1.20:5000/test-checkout/cab-a",  # make run's test checkout page
    "https://buy.stripe.com/test_9AQ5mK0aB3",  # a Stripe test-mode link
])
def test_qr_refuses_a_test_link_unless_asked(arcade, tmp_path, url):
    refused = arcade("qr", "cab-a", "--url", url, "--out", "cab-a.png")

    assert refused.exit_code == 2
    assert refused.output == (f"error: {url} is a test link (no real payment): a cabinet's QR "
                              "code needs a live one; add --test to print it anyway (for trying "
                              "things out)\n")
    assert not (tmp_path / "cab-a.png").exists()

    allowed = arcade("qr", "cab-a", "--url", url, "--out", "cab-a.png", "--test")
    assert allowed.exit_code == 0, allowed.output
    assert decode_png(tmp_path / "cab-a.png") == [url]


def test_qr_warns_that_a_phone_cannot_open_this_computer(arcade, tmp_path):
    url = "http://127.0.0.1:5000/test-checkout/cab-a"
    result = arcade("qr", "cab-a", "--url", url, "--out", "cab-a.png", "--test")

    assert result.exit_code == 0, result.output
    assert result.stderr.startswith(f"warning: {url} points to this computer, which a phone "
                                    "cannot open: set PUBLIC_URL")


def test_pay_without_settings_points_to_make_runs_settings(arcade, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "activate").write_text("# written by arcade run\n")

    result = arcade("pay", "machine_456")

    assert result.exit_code == 2
    assert result.output.endswith("`make run` wrote its settings here: . run/activate)\n")
