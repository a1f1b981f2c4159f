"""PII scrubbing: every type found and replaced, checksums respected, ordinary numbers left alone."""

import pytest

from tunesmith.config import PreparePIIConfig
from tunesmith.data.prepare.pii import PIIScrubber, find_pii, iban_ok, luhn_ok, redact
from tunesmith.data.prepare.records import Record


@pytest.mark.parametrize(
    "text, kind",
    [
        ("write to jane.doe+news@example.co.uk today", "email"),
        ("call +44 20 7946 0958 now", "phone"),
        ("call (555) 123-4567 now", "phone"),
        ("call 555-123-4567 now", "phone"),
        ("card 4111 1111 1111 1111 expires", "credit_card"),
        ("card 378282246310005 expires", "credit_card"),
        ("server 192.168.10.254 is down", "ip_address"),
        ("host 2001:0db8:85a3:0000:0000:8a2e:0370:7334 up", "ip_address"),
        ("pay to GB82 WEST 1234 5698 7654 32 please", "iban"),
        ("pay to DE89370400440532013000 please", "iban"),
        ("key sk-proj-abcdefghijklmnopqrstuvwxyz0123 leaked", "api_key"),
        ("aws AKIAIOSFODNN7EXAMPLE leaked", "api_key"),
        ("token ghp_0123456789abcdefghijklmnopqrstuvwxyzAB leaked", "api_key"),
        ('api_key = "q8Zr2LmX9vT4nB7kW1pS6yH3"', "api_key"),
    ],
)
def test_each_type_found_and_replaced(text, kind):
    spans = find_pii(text)
    assert [k for _, _, k in spans] == [kind], spans
    assert f"<{kind.upper()}>" in redact(text)


@pytest.mark.parametrize(
    "text",
    [
        "She sold 48 clips in April and 24 in May, 72 in total.",
        "The year 2023 had 365 days; pi is 3.14159265358979.",
        "Profit: 14,000-3,920-1,000=$<<14000-3920-1000=9080>>9,080",
        "2000000-400000=1600000 and 1,600,000",
        "Version 1.2.3 and 10.0.1 are out; ratio 1:2:3.",
        "Order number 4111111111111112 failed the Luhn check.",  # not a valid card
        "Call extension 4567 or room 123-45.",
        "DE89370400440532013001 is a mistyped IBAN.",  # mod-97 fails
        "token = 'aaaaaaaaaaaaaaaaaaaa'",  # no entropy
        "ISBN 978-3-16-148410-0 and phone-like 12345678",
    ],
)
def test_no_false_positive_on_ordinary_numbers(text):
    assert find_pii(text) == []


def test_luhn_and_iban_checksums_hand_checked():
    """Luhn of 79927398713: from the right double every 2nd digit -> 7 9 9 4 7 6 9 7 7 2 3 with
    doubles 2*1=2, 2*8=16->7, 2*3=6, 2*2=4, 2*9=18->9: 3+2+7+7+9+6+7+4+9+7+7 = 70, 70 % 10 == 0."""
    assert luhn_ok("79927398713") and not luhn_ok("79927398710")
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and not iban_ok("GB83 WEST 1234 5698 7654 32")


def rec(text):
    return Record("conversation", {"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": "ok"}]}, "f:1", 0)


def test_scrubber_redacts_and_counts():
    s = PIIScrubber(PreparePIIConfig(action="redact"))
    out = s([rec("mail a@b.io or c@d.io from 10.0.0.1"), rec("nothing here")])
    assert out[0].data["messages"][0]["content"] == "mail <EMAIL> or <EMAIL> from <IP_ADDRESS>"
    assert s.report.counts == {"email found": 2, "ip_address found": 1, "rows with PII": 1}
    assert s.report.rows_out == 2


def test_scrubber_drop_and_type_selection():
    s = PIIScrubber(PreparePIIConfig(action="drop", types=["email"]))
    out = s([rec("mail a@b.io"), rec("server 10.0.0.1")])
    assert [r.data["messages"][0]["content"] for r in out] == ["server 10.0.0.1"]
    assert s.report.dropped == {"contains PII (email)": 1}
