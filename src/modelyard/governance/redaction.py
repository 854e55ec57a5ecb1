"""PII redaction for anything Modelyard stores or logs from payloads.

Detectors (each validated, not just pattern-matched, where a checksum exists): e-mail, phone,
payment card (Luhn), IBAN (mod 97), US SSN, IPv4/IPv6. Field rules per payload key: ``drop``,
``hash`` (SHA-256, so equal values stay joinable) or ``mask`` (keep the last 4 characters).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

from modelyard.domain.errors import ValidationFailed

# A match starts only where a run of local-part characters starts: unanchored, every position
# of a long run without "@" was a new start that rescanned the rest (quadratic: 100 kB of
# text took 25 s, holding the GIL, so the whole server stalled).
_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@"
                    r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_CARD = re.compile(r"(?<![\w-])(?:\d[ -]?){12,18}\d(?![\w-])")
# Written in groups of four ("GB82 WEST 1234 ...") or compact ("GB82WEST1234...").
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,3})?|[A-Z0-9]{11,30})\b")
_SSN = re.compile(r"(?<!\d)(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?!\d)")
_PHONE = re.compile(r"(?<![\w+:.])\+?\(?\d[\d ().-]{6,18}\d(?![\w:])")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        n = int(char)
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _sub(pattern: re.Pattern[str], label: str, valid: Callable[[str], bool] | None = None
         ) -> Callable[[str], str]:
    def apply(text: str) -> str:
        return pattern.sub(lambda m: label if valid is None or valid(m.group(0))
                           else m.group(0), text)
    return apply


def _ip_ok(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _phone_ok(text: str) -> bool:
    """7-15 digits, written like a phone number: a leading + or at least two separators
    (so decimals, times and version numbers stay as they are)."""
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}|\d{1,3}(?:\.\d{1,3}){3}", text):
        return False  # an ISO date, or a dotted quad that is no IP address
    digits = re.sub(r"\D", "", text)
    separators = sum(text.count(c) for c in " ().-")
    return 7 <= len(digits) <= 15 and (text.startswith("+") or separators >= 2)


def _card_ok(text: str) -> bool:
    digits = re.sub(r"\D", "", text)
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


# Order matters: specific, checksummed patterns first; phone (the loosest) last.
_STEPS = (
    _sub(_EMAIL, "[EMAIL]"),
    _sub(_IBAN, "[IBAN]", iban_ok),
    _sub(_CARD, "[CARD]", _card_ok),
    _sub(_SSN, "[SSN]"),
    _sub(_IPV6, "[IP]", _ip_ok),
    _sub(_IPV4, "[IP]", _ip_ok),
    _sub(_PHONE, "[PHONE]", _phone_ok),
)


def redact_text(text: str) -> str:
    for step in _STEPS:
        text = step(text)
    return text


RULES = ("drop", "hash", "mask")


def check_rules(rules: Any) -> dict[str, str]:
    if not isinstance(rules, Mapping):
        raise ValidationFailed("redaction must map payload fields to drop, hash or mask",
                               field="redaction")
    for field, rule in rules.items():
        if not isinstance(field, str) or not field or len(field) > 256:
            raise ValidationFailed("redaction field names must be 1-256 characters",
                                   field="redaction")
        if rule not in RULES:
            raise ValidationFailed(f"field rule for {field!r} must be one of {', '.join(RULES)}",
                                   field=f"redaction.{field}")
    return dict(rules)


def _hash(value: Any) -> str:
    return "sha256:" + hashlib.sha256(str(value).encode()).hexdigest()


def _mask(value: Any) -> str:
    text = str(value)
    return "*" * max(0, len(text) - 4) + text[-4:]


def _each(value: Any, rule: Callable[[Any], str]) -> Any:
    """A rule applies to each value of a column (a request of several rows), not to the
    column's printed form."""
    if isinstance(value, list | tuple):
        return [_each(item, rule) for item in value]
    return rule(value)


def redact(value: Any, rules: Mapping[str, str] | None = None) -> Any:
    """A copy of ``value`` (text, mappings, lists) with PII replaced and field rules applied."""
    rules = rules or {}
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            rule = rules.get(str(key))
            if rule == "drop":
                continue
            if rule == "hash":
                out[key] = _each(item, _hash)
            elif rule == "mask":
                out[key] = _each(item, _mask)
            else:
                out[key] = redact(item, rules)
        return out
    if isinstance(value, list | tuple):
        return [redact(item, rules) for item in value]
    return value


class RedactingFilter(logging.Filter):
    """Log records leave with PII redacted from their message and traceback (a model's error
    message can quote the payload it failed on)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact_text(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        return True


def redact_logs(*names: str) -> None:
    """Attach the filter to these loggers (once): a logger's filters see only its own
    records, so each Modelyard logger is named."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())
