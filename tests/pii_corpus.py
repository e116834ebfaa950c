"""The PII corpus: every form of every kind of value the masker must catch, and PII-free lines it must leave.

To add a case, append a ``PiiCase`` to ``PII_CASES``: the kind the masker should report, the raw
value in its plain spelling, and a text (a contact-center sentence or a JSON answer) that writes
it in the form under test. ``tests/test_pii_corpus.py`` pushes every case through every path.

``raw_leaks(text)`` says which raw values of the corpus appear in any text (a log, an XCom, a
table dump, what a gateway received), whatever their spelling: it normalises the text (NFKC,
zero-width characters, JSON and URL escapes) and compares letters and digits only, so
``4111 1111``, ``4111-1111`` and ``４１１１\u200b1111`` all count as the digits ``41111111``.
"""

from __future__ import annotations

import random
import re
import unicodedata
from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class PiiCase:
    """One value written one way: ``kind`` is what the masker reports, ``value`` the plain spelling."""

    kind: str
    value: str
    text: str
    form: str = "plain"


def _full_width(text: str) -> str:
    wide = (chr(ord(char) + 0xFEE0) if "!" <= char <= "~" else "\u3000" if char == " " else char for char in text)
    return "".join(wide)


def _json_escaped(text: str) -> str:
    return "".join(f"\\u{ord(char):04x}" if char.isdigit() or char == "@" else char for char in text)


ZWSP = "\u200b"
NBSP = "\u00a0"
THIN = "\u2009"

PII_CASES: tuple[PiiCase, ...] = (
    # --- cards -------------------------------------------------------------------------------
    PiiCase("CARD", "4539 1488 0343 6467", "Customer read the card as 4539 1488 0343 6467 for the refund."),
    PiiCase("CARD", "4012-8888-8888-1881", "Card on file: 4012-8888-8888-1881, expiry 09/27.", "dashes"),
    PiiCase("CARD", "4716.9382.0456.1029", "she typed 4716.9382.0456.1029 into the IVR", "dots"),
    PiiCase("CARD", "5555555555554444", "Charged card 5555555555554444 twice.", "no separators"),
    PiiCase("CARD", "3782 822463 10005", "Amex 3782 822463 10005 declined at checkout.", "amex 4-6-5"),
    PiiCase("CARD", "371449635398431", '{"card":"371449635398431","status":"declined"}', "amex in JSON"),
    PiiCase("CARD", "4917 6100 0000 0000 003", "the 19-digit card 4917 6100 0000 0000 003 was reissued", "4-4-4-4-3"),
    PiiCase("CARD", "2223 0031 2200 3222", "Mastercard 2223 0031 2200 3222 on the account.", "2-series"),
    PiiCase("CARD", "6011000990139424", "Discover card 6011000990139424, please refund.", "discover"),
    PiiCase("CARD", "3530111333300000", "JCB 3530111333300000 used for the booking", "jcb"),
    PiiCase("CARD", "30569309025904", "Diners 30569309025904 on file", "diners 14"),
    PiiCase("CARD", "4222222222222", "old visa 4222222222222 expired", "visa 13"),
    PiiCase("CARD", "5132 6472 8820 1674", f"card {_full_width('5132 6472 8820 1674')} on hold", "full-width"),
    PiiCase("CARD", "6011111111111117", f"card {ZWSP.join('6011111111111117')} please", "zero-width"),
    PiiCase("CARD", "3793 5450 8162 3067", f"card 3793{NBSP}5450{NBSP}8162{NBSP}3067 ok", "no-break spaces"),
    PiiCase("CARD", "5105 1051 0510 5100", f"card 5105{THIN}1051{THIN}0510{THIN}5100 ok", "thin spaces"),
    PiiCase("CARD", "4111 1111 1111 1111", "Card number is 4111 1111\n1111 1111 thanks", "newline between groups"),
    PiiCase("CARD", "4532015112830366", "Card number is 45320151\n12830366 thanks", "newline inside a group"),
    PiiCase("CARD", "5529000000000001", '{"answer":"card ' + _json_escaped("5529000000000001") + '"}', "JSON escapes"),
    PiiCase("CARD", "4024 0071 8246 3116", '{"card":"4024\\u00200071\\u00208246\\u00203116"}', "JSON-escaped spaces"),
    # --- SSN ---------------------------------------------------------------------------------
    PiiCase("SSN", "512-34-8876", "Caller verified SSN 512-34-8876 before the transfer."),
    PiiCase("SSN", "287654321", "Her SSN is 287654321, please update.", "undashed after SSN"),
    PiiCase("SSN", "401 22 7315", "social security number: 401 22 7315", "spaced after keyword"),
    PiiCase("SSN", "078051120", "SS# 078051120 on the form", "SS#"),
    PiiCase("SSN", "665123344", "He gave 665123344 as his SSN.", "keyword after"),
    PiiCase("SSN", "345678012", '{"customer":{"ssn":"345678012","tier":"gold"}}', "JSON key"),
    PiiCase("SSN", "456781234", '{"social_security_number":"456781234"}', "JSON long key"),
    PiiCase("SSN", "321549876", '{"customerSsn":"321549876"}', "camelCase JSON key"),
    PiiCase("SSN", "561-44-2290", f"SSN {_full_width('561-44-2290')} confirmed", "full-width"),
    PiiCase("SSN", "623-19-5508", "ssn 623\u201319\u20135508 on file", "en dashes"),
    PiiCase("SSN", "702-31-4467", "SSN 702-31-\n4467 confirmed", "newline after dash"),
    PiiCase("SSN", "134-72-9981", f"SSN 134{ZWSP}-72-{ZWSP}9981 ok", "zero-width"),
    PiiCase("SSN", "250831176", f"SSN 250{NBSP}83{NBSP}1176 ok", "no-break spaces"),
    PiiCase("SSN", "234-56-7012", '{"note":"SSN ' + _json_escaped("234-56-7012") + '"}', "JSON escapes"),
    # --- IBAN --------------------------------------------------------------------------------
    PiiCase("IBAN", "DE89370400440532013000", "Refund to IBAN DE89 3704 0044 0532 0130 00 please.", "spaces"),
    PiiCase("IBAN", "GB82WEST12345698765432", "account GB82WEST12345698765432 for the payout", "compact"),
    PiiCase("IBAN", "FR1420041010050500013M02606", "IBAN FR14 2004 1010 0505 0001 3M02 606.", "letters inside"),
    PiiCase("IBAN", "NL91ABNA0417164300", '{"iban":"NL91ABNA0417164300","amount":"42.00"}', "JSON"),
    PiiCase("IBAN", "ES9121000418450200051332", f"IBAN {_full_width('ES9121000418450200051332')} ok", "full-width"),
    PiiCase("IBAN", "BE68539007547034", "IBAN BE68 5390 0754\n7034 thanks", "newline"),
    # --- phone -------------------------------------------------------------------------------
    PiiCase("PHONE", "4155550132", "Call me back at 4155550132 after five.", "bare 10 digits"),
    PiiCase("PHONE", "12125550143", "my cell is 12125550143", "bare 1 + 10 digits"),
    PiiCase("PHONE", "(503) 555-0199", "Reach her on (503) 555-0199 tomorrow."),
    PiiCase("PHONE", "415.555.0176", "number 415.555.0176 is the office", "dots"),
    PiiCase("PHONE", "646-555-0111", "callback 646-555-0111", "dashes"),
    PiiCase("PHONE", "+1 206 555 0148", "dial +1 206 555 0148 for billing", "+1 spaced"),
    PiiCase("PHONE", "+44 20 7946 0958", "UK line +44 20 7946 0958", "international"),
    PiiCase("PHONE", "3125557788", '{"phone":"3125557788","consent":true}', "JSON bare"),
    PiiCase("PHONE", "6175559021", f"phone {_full_width('6175559021')}", "full-width"),
    PiiCase("PHONE", "718 555 3344", f"phone 718{NBSP}555{NBSP}3344", "no-break spaces"),
    PiiCase("PHONE", "(347) 555-0162", "phone (347) 555-\n0162 anytime", "newline"),
    PiiCase("PHONE", "9175550123", '{"phone":"' + _json_escaped("9175550123") + '"}', "JSON escapes"),
    # --- email -------------------------------------------------------------------------------
    PiiCase("EMAIL", "jane.doe@example.com", "Send the receipt to jane.doe@example.com please."),
    PiiCase("EMAIL", "m.garcia+refunds@mail.example.org", "email m.garcia+refunds@mail.example.org.", "plus tag"),
    PiiCase("EMAIL", "li.wei@support.example.co.uk", '{"email":"li.wei@support.example.co.uk"}', "JSON"),
    PiiCase("EMAIL", "k.okafor@example.net", "write to k.okafor@\nexample.net", "newline after @"),
    PiiCase("EMAIL", "ana.silva@example.com", f"mail {_full_width('ana.silva@example.com')}", "full-width"),
    PiiCase("EMAIL", "omar.haddad@example.com", f"mail omar.haddad{ZWSP}@example.com", "zero-width"),
    PiiCase("EMAIL", "r.novak@example.com", '{"email":"r.novak' + _json_escaped("@") + 'example.com"}', "JSON escape"),
)


#: Kinds whose values are digits: their digit-only form is a leak too.
DIGIT_KINDS = frozenset({"CARD", "SSN", "PHONE"})

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"))
_ESCAPE = re.compile(r"\\+(?:u([0-9a-fA-F]{4})|[nrtbf])|%([0-9a-fA-F]{2})")
_NOT_ALNUM = re.compile(r"[^0-9a-z@]+")


def _unescape(match: re.Match[str]) -> str:
    code = match.group(1) or match.group(2)
    return chr(int(code, 16)) if code else " "


def compact(text: str) -> str:
    """Letters, digits and ``@`` only, lower case, after undoing every spelling trick (JSON escapes
    at any depth, ``%40`` URL escapes, NFKC, zero-width characters)."""
    text = _ESCAPE.sub(_unescape, text)
    text = unicodedata.normalize("NFKC", text.translate(_ZERO_WIDTH)).lower()
    return _NOT_ALNUM.sub("", text)


@cache
def _needles() -> tuple[tuple[str, str], ...]:
    """(compact needle, raw value) for every value: the digits of digit kinds, else the compact value."""
    needles = {}
    for case in PII_CASES:
        needle = "".join(filter(str.isdigit, case.value)) if case.kind in DIGIT_KINDS else compact(case.value)
        needles[needle] = case.value
    return tuple(needles.items())


def raw_leaks(text: str) -> list[str]:
    """Raw corpus values present in ``text`` in any spelling (see the module docstring), sorted.

    Letters and digits are compared with everything else removed, so a value is also found when
    split by spaces, dashes, quotes or line breaks; a masked value (``[REDACTED:CARD]``) is not.
    Linear in ``len(text)`` per value: a few milliseconds per megabyte per value.
    """
    haystack = compact(text)
    return sorted({value for needle, value in _needles() if needle in haystack})


# --- PII-free contact-center text ----------------------------------------------------------------

_CLEAN_TEMPLATES = (
    "Order #{letter}-{n5} shipped on {date} and should arrive by {weekday}.",
    "Your order {n9} was placed at {time} and totals ${amount}.",
    "Order number {n10} is ready for pickup at store {n4}.",
    "Amazon order {n3}-{n7}-{n7} was refunded in full.",
    "Tracking number 1Z{upper3}{n3}{n10}{n1} shows the parcel in transit.",
    "USPS tracking {usps} was delivered at {time}.",
    "FedEx tracking {n12} is out for delivery.",
    "Ticket INC-{n7} was opened on {date} at {time}.",
    "Case CS-{year}-{n6} escalated to tier 2 after {n2} minutes on hold.",
    "Reference {n8} applies to the credit of {amount} EUR.",
    "The customer was charged ${amount} on {date_us}, then ${amount} again on {date_us}.",
    "Refund of {amount_eu} EUR issued on {date_eu}.",
    "Callback scheduled for {date} at {time}; expected wait {n2} minutes.",
    "Average handle time dropped {pct}% to {mmss} this week.",
    "Customer satisfaction rose from {pct}% to {pct}% in Q{q} {year}.",
    "Agent desktop v{n1}.{n2}.{n1} crashed at {iso}.",
    "Build {n2}.{n1}.{n5}.{n4} fixed the transcript export.",
    "The customer lives in ZIP {n5} and moved to {n5}-{n4}.",
    "Postcode SW1A {n1}AA, parcel weight {n1}.{n1} kg.",
    "Qty {n1} x {n3} ml bottles, unit price ${amount}.",
    "She ordered {n2} items across {n1} shipments totalling {amount} USD.",
    '{{"order_id":"{n10}","status":"shipped","eta":"{date}"}}',
    '{{"ticket":"INC-{n7}","opened":"{iso}","priority":{n1}}}',
    '{{"event":"refund","amount":{amount},"ts":{unix},"ts_ms":{unix_ms}}}',
    '{{"invoice":"INV-{year}-{n6}","total":"{amount}","currency":"USD"}}',
    '{{"sku":"SKU-{n8}","qty":{n2},"price":{amount}}}',
    "Log line {iso} queue=billing wait_ms={n5} agents={n2}",
    "Conversation {uuid} lasted {mmss} with {n2} holds.",
    "Invoice {n10} is overdue by {n2} days.",
    "Account ref {n10} was closed at the customer's request.",
    "Transaction {n12} settled on {date}.",
    "Confirmation code {upper3}{n6} sent by text message.",
    "Extension {n4} transferred the call to the returns desk.",
    "The store at {n4} Main Street opens at {time}.",
    "Firmware {n1}.{n2}.{n3} on router model {upper3}-{n4} keeps rebooting.",
    "Between {date} and {date} we handled {n5} calls, {pct}% resolved first time.",
    "IP {n2}.{n2}.{n1}.{n3} was blocked after {n2} failed logins.",
    "Temperature logged at {n2}.{n1} C at {time} on {date_eu}.",
    "Serial number SN{n10}{n2} replaced under warranty.",
    "Booking {n6} for {n1} guests on {date}, room {n3}.",
)


def _filler(rng: random.Random) -> dict[str, str]:
    digits = lambda count: str(rng.randint(10 ** (count - 1), 10**count - 1))  # noqa: E731
    day = f"{rng.randint(2022, 2026)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    clock = f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"
    return {
        **{f"n{count}": digits(count) for count in range(1, 13)},
        "letter": rng.choice("ABCDEFGH"),
        "upper3": "".join(rng.choices("ABCDEFGHJKLMNPRSTUVWXYZ", k=3)),
        "date": day,
        "date_us": f"{rng.randint(1, 12):02d}/{rng.randint(1, 28):02d}/{rng.randint(2022, 2026)}",
        "date_eu": f"{rng.randint(1, 28):02d}.{rng.randint(1, 12):02d}.{rng.randint(2022, 2026)}",
        "weekday": rng.choice(["Monday", "Tuesday", "Friday"]),
        "time": clock,
        "iso": f"{day}T{clock}:{rng.randint(0, 59):02d}Z",
        "mmss": f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}",
        "amount": f"{rng.randint(1, 9999)}.{rng.randint(0, 99):02d}",
        "amount_eu": f"{rng.randint(1, 9)}.{rng.randint(100, 999)},{rng.randint(0, 99):02d}",
        "pct": f"{rng.randint(1, 99)}.{rng.randint(0, 9)}",
        "q": str(rng.randint(1, 4)),
        "year": str(rng.randint(2020, 2026)),
        "unix": str(rng.randint(1_600_000_000, 1_800_000_000)),
        "unix_ms": str(rng.randint(1_600_000_000_000, 1_800_000_000_000)),
        "usps": " ".join(["94" + digits(2), *(digits(4) for _ in range(4)), digits(2)]),
        "uuid": "-".join(f"{rng.getrandbits(bits):0{bits // 4}x}" for bits in (32, 16, 16, 16, 48)),
    }


def clean_corpus(lines_per_template: int = 8, seed: int = 20261204) -> list[str]:
    """PII-free contact-center lines: ids, tracking numbers, dates, amounts, versions, zip codes..."""
    rng = random.Random(seed)
    return [template.format(**_filler(rng)) for template in _CLEAN_TEMPLATES for _ in range(lines_per_template)]
