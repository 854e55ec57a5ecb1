"""PII redaction, property-tested: no detected value survives, and text without PII comes
back unchanged."""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.governance.redaction import iban_ok, luhn_ok, redact, redact_text

WORDS = st.text(alphabet=string.ascii_letters + " ,;!?'", min_size=0, max_size=40)


def with_context(pii: st.SearchStrategy[str]) -> st.SearchStrategy[tuple[str, str]]:
    return st.tuples(WORDS, pii, WORDS).map(lambda t: (f"{t[0]} {t[1]} {t[2]}", t[1]))


def card() -> st.SearchStrategy[str]:
    def build(digits: list[int], grouped: bool) -> str:
        body = "".join(map(str, digits))
        check = next(str(d) for d in range(10) if luhn_ok(body + str(d)))
        number = body + check
        return " ".join(number[i:i + 4] for i in range(0, 16, 4)) if grouped else number
    return st.builds(build, st.lists(st.integers(0, 9), min_size=15, max_size=15),
                     st.booleans())


def iban() -> st.SearchStrategy[str]:
    def build(bank: str, account: str) -> str:
        bban = bank + account
        moved = bban + "GB00"
        check = 98 - int("".join(str(int(c, 36)) for c in moved)) % 97
        return f"GB{check:02d}{bban}"
    return st.builds(build, st.text(alphabet=string.ascii_uppercase, min_size=4, max_size=4),
                     st.text(alphabet=string.digits, min_size=14, max_size=14))


EMAILS = st.builds(lambda u, d: f"{u}@{d}.com",
                   st.text(alphabet=string.ascii_lowercase + string.digits + "._",
                           min_size=1, max_size=12).filter(lambda u: u[0] not in "._"),
                   st.text(alphabet=string.ascii_lowercase, min_size=2, max_size=10))
SSNS = st.builds(lambda a, b, c: f"{a:03d}-{b:02d}-{c:04d}", st.integers(1, 665),
                 st.integers(1, 99), st.integers(1, 9999))
IPV4 = st.ip_addresses(v=4).map(str)
IPV6 = st.ip_addresses(v=6).map(str).filter(lambda a: a.count(":") >= 2)
PHONES = st.builds(lambda c, a, b: f"+{c} {a} {b}", st.integers(1, 99),
                   st.integers(100, 999), st.integers(1000000, 9999999))


@settings(max_examples=60, deadline=None)
@given(st.one_of(with_context(EMAILS), with_context(card()), with_context(iban()),
                 with_context(SSNS), with_context(IPV4), with_context(IPV6),
                 with_context(PHONES)))
def test_no_detected_value_survives(case: tuple[str, str]) -> None:
    text, pii = case
    assert pii not in redact_text(text)


@settings(max_examples=100, deadline=None)
@given(WORDS)
def test_text_without_pii_is_unchanged(text: str) -> None:
    assert redact_text(text) == text


def test_checksums_decide_and_ordinary_numbers_stay() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and not iban_ok("GB83 WEST 1234 5698 7654 32")
    kept = ("order 4111111111111112 shipped; version 1.2.3 took 12.5 ms on 2026-11-24, "
            "ids 1234567 and 7654321, at 10:09:11, 10.0.0.999 is no address")
    assert redact_text(kept) == kept


def test_field_rules_drop_hash_and_mask() -> None:
    payload = {"name": "Ana", "email": "ana@example.com", "card": "4111111111111111",
               "note": "call +44 20 7946 0958", "rows": [{"ip": "10.0.0.1"}]}
    out = redact(payload, {"name": "drop", "email": "hash", "card": "mask"})
    assert "name" not in out
    assert out["email"].startswith("sha256:") and "ana" not in out["email"]
    assert out["card"] == "************1111"
    assert out["note"] == "call [PHONE]"
    assert out["rows"] == [{"ip": "[IP]"}]
