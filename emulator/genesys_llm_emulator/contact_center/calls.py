"""A deterministic synthetic contact center: the data behind section 9 (analytics jobs, transcripts).

Every UTC day holds a plausible number of inbound voice calls (`conversations_per_day`, varying by
up to +-25% from day to day), each a customer calling a company about one topic (billing dispute,
cancellation, technical support, address change, delivery problem, password reset, plan upgrade),
routed through an IVR and a queue to an agent, with a transcript built from phrase templates.
About `pii_ratio` of the calls carry PII in their transcript: payment card numbers that pass the
Luhn check (the well-known test numbers such as 4111 1111 1111 1111 and random valid ones, grouped
by spaces, dashes or not at all), e-mail addresses, US phone numbers (555-01xx, the range kept
for fiction) and SSN-like numbers; agents sometimes read an e-mail address back, so PII also shows
up in `internal` phrases. Names appear in every call, as they would.

Everything is a pure function of (day, index of the call in that day) and the two ratios: the same
interval gives the same conversations, ids, timings and words in every process and on every
Python, with no state to keep. The package's other modules hold the data tables (`tables.py`),
the id scheme (`ids.py`), which calls a job finds (`listing.py`) and the JSON the platform
answers with (`records.py`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

from ..draws import Draws, stable_fraction
from .ids import MAX_DAY_NUMBER, MAX_INDEX, conversation_id, named_uuid
from .tables import (
    AGENTS,
    ANYTHING_ELSE,
    AREA_CODES,
    CLOSINGS,
    COMPANY,
    FIRST_NAMES,
    GREETINGS,
    LAST_NAMES,
    MAIL_DOMAINS,
    NOTHING_ELSE,
    PII_ANSWERS,
    PII_ASKS,
    PII_KINDS,
    STREETS,
    TEST_CARDS,
    TOPICS,
    VERIFIED,
    VERIFY_ANSWERS,
    VERIFY_ASKS,
    Agent,
    Topic,
)
from .times import EPOCH, day_start_ms


def conversations_on(day: date, per_day: int) -> int:
    """How many calls `day` has: `per_day` scaled by a factor in [0.75, 1.25] fixed for that day."""
    day_number = (day - EPOCH).days
    if not 0 <= day_number <= MAX_DAY_NUMBER:
        return 0
    return min(MAX_INDEX + 1, round(per_day * (0.75 + 0.5 * stable_fraction(f"volume/{day.isoformat()}"))))


@dataclass(frozen=True)
class Phrase:
    """One utterance: `internal` is the agent, `external` the customer; times relative to recording start."""

    purpose: str
    text: str
    offset_ms: int
    duration_ms: int
    confidence: float


@dataclass(frozen=True)
class Conversation:
    """One inbound voice call: customer -> IVR -> queue -> agent; `talk_ms` is the recorded part."""

    day: date
    index: int
    conversation_id: str
    topic: str
    queue: str
    start_ms: int
    ivr_ms: int
    queue_ms: int
    alert_ms: int
    talk_ms: int
    recorded: bool
    pii: tuple[str, ...]
    agent: Agent
    customer_name: str
    ani: str
    phrases: tuple[Phrase, ...]

    @property
    def talk_start_ms(self) -> int:
        return self.start_ms + self.ivr_ms + self.queue_ms + self.alert_ms

    @property
    def end_ms(self) -> int:
        return self.talk_start_ms + self.talk_ms

    def participant_id(self, role: str) -> str:
        return named_uuid(f"{self.conversation_id}/{role}/participant")

    def session_id(self, role: str) -> str:
        return named_uuid(f"{self.conversation_id}/{role}/session")

    @property
    def communication_id(self) -> str:
        """The communication the transcript belongs to: the customer's voice session."""
        return self.session_id("customer")

    @property
    def queue_id(self) -> str:
        return named_uuid(f"queue/{self.queue}")

    @property
    def transcript_id(self) -> str:
        return named_uuid(f"{self.conversation_id}/transcript")

    @property
    def recording_id(self) -> str:
        return named_uuid(f"{self.conversation_id}/recording")

    @property
    def text(self) -> str:
        """The transcript as plain text, one `purpose: text` line per phrase (for tests and debugging)."""
        return "\n".join(f"{phrase.purpose}: {phrase.text}" for phrase in self.phrases)


def conversation(day: date, index: int, pii_ratio: float, unrecorded_ratio: float) -> Conversation:
    """The `index`-th call of `day` (whether the day has that many calls is `conversations_on`'s say)."""
    return _conversation(day, index, float(pii_ratio), float(unrecorded_ratio))


@functools.lru_cache(maxsize=4096)
def _conversation(day: date, index: int, pii_ratio: float, unrecorded_ratio: float) -> Conversation:
    cid = conversation_id(day, index)
    rng = Draws(f"conversation/{day.isoformat()}/{index}")
    # Mostly US business hours (12:00-24:00 UTC, 8am-8pm Eastern), some at any hour; the evening
    # calls near midnight UTC run into the next day.
    second_of_day = rng.uniform(12 * 3600, 86_400) if rng.fraction() < 0.85 else rng.uniform(0, 86_400)
    start_ms = day_start_ms(day) + int(second_of_day * 1000)
    topic, agent = rng.pick(TOPICS), rng.pick(AGENTS)
    first, last = rng.pick(FIRST_NAMES), rng.pick(LAST_NAMES)
    ani = f"tel:+1{rng.pick(AREA_CODES)}555{rng.between(100, 199):04d}"
    ivr_ms, queue_ms, alert_ms = rng.between(15_000, 75_000), rng.between(5_000, 180_000), rng.between(2_000, 9_000)
    pii: tuple[str, ...] = ()
    if stable_fraction(f"pii/{cid}") < pii_ratio:
        pii_rng = Draws(f"pii/{cid}")
        kinds = [pii_rng.pick(PII_KINDS)]
        if pii_rng.fraction() < 1 / 3:  # a third of them give two kinds
            kinds.append(pii_rng.pick([kind for kind in PII_KINDS if kind != kinds[0]]))
        pii = tuple(kind for kind in PII_KINDS if kind in kinds)
    lines = _script(rng, topic, agent, first, last, start_ms, pii, cid)
    phrases = _timed(rng, lines)
    talk_ms = phrases[-1].offset_ms + phrases[-1].duration_ms + rng.between(600, 2_500)
    return Conversation(
        day=day,
        index=index,
        conversation_id=cid,
        topic=topic.name,
        queue=topic.queue,
        start_ms=start_ms,
        ivr_ms=ivr_ms,
        queue_ms=queue_ms,
        alert_ms=alert_ms,
        talk_ms=talk_ms,
        recorded=stable_fraction(f"recorded/{cid}") >= unrecorded_ratio,
        pii=pii,
        agent=agent,
        customer_name=f"{first} {last}",
        ani=ani,
        phrases=phrases,
    )


def _script(
    rng: Draws,
    topic: Topic,
    agent: Agent,
    first: str,
    last: str,
    start_ms: int,
    pii: tuple[str, ...],
    cid: str,
) -> list[tuple[str, str]]:
    """(purpose, text) lines of the call, agent `internal`, customer `external`."""
    hour = (start_ms // 3_600_000 - 5) % 24  # US Eastern, near enough for a greeting
    part_of_day = "morning" if hour < 12 else "afternoon" if hour < 17 else "evening"
    fields = {
        "company": COMPANY,
        "agent": agent.first_name,
        "part_of_day": part_of_day,
        "first": first,
        "customer": f"{first} {last}",
        "years": rng.between(2, 15),
        "street": rng.pick(STREETS),
    }

    def say(purpose: str, variants: tuple[str, ...]) -> tuple[str, str]:
        return purpose, rng.pick(variants).format(**fields)

    lines = [
        say("internal", GREETINGS),
        say("external", topic.openers),
        say("internal", VERIFY_ASKS),
        say("external", VERIFY_ANSWERS),
        say("internal", VERIFIED),
    ]
    lines.extend(_pii_lines(pii, first, last, cid))
    for agent_variants, customer_variants in topic.exchanges:
        lines.append(say("internal", agent_variants))
        lines.append(say("external", customer_variants))
    lines.append(say("internal", topic.resolutions))
    lines.append(say("external", topic.reactions))
    lines.append(say("internal", ANYTHING_ELSE))
    lines.append(say("external", NOTHING_ELSE))
    lines.append(say("internal", CLOSINGS))
    return lines


def _pii_lines(pii: tuple[str, ...], first: str, last: str, cid: str) -> Iterator[tuple[str, str]]:
    """The agent asking for each kind of PII, the customer giving it, sometimes read back."""
    rng = Draws(f"pii-values/{cid}")
    for kind in pii:
        value = _pii_value(rng, kind, first, last)
        yield "internal", rng.pick(PII_ASKS[kind])
        yield "external", rng.pick(PII_ANSWERS[kind]).format(value=value)
        if kind == "email" and rng.fraction() < 0.5:
            yield "internal", f"Let me read that back: {value}. Is that right?"
            yield "external", "Yes, that's right."


def _pii_value(rng: Draws, kind: str, first: str, last: str) -> str:
    if kind == "email":
        local = rng.pick((f"{first}.{last}", f"{first[0]}{last}", f"{first}{rng.between(1, 99)}"))
        return f"{local.lower()}@{rng.pick(MAIL_DOMAINS)}"
    if kind == "phone":
        area, line = rng.pick(AREA_CODES), f"01{rng.between(0, 99):02d}"
        return rng.pick((f"({area}) 555-{line}", f"{area}-555-{line}", f"+1 {area} 555 {line}"))
    if kind == "ssn":
        ssn_area = rng.between(100, 665)  # not 000, 666 or 9xx, which no SSN starts with
        digits = (f"{ssn_area:03d}", f"{rng.between(10, 99):02d}", f"{rng.between(1000, 9999):04d}")
        return rng.pick(("-", " ")).join(digits)
    if rng.fraction() < 0.5:
        number = rng.pick(TEST_CARDS)
    else:
        number = luhn_complete(rng.pick("45") + "".join(str(rng.between(0, 9)) for _ in range(14)))
    separator = rng.pick((" ", "-", ""))
    return separator.join(number[i : i + 4] for i in range(0, 16, 4))


def luhn_complete(partial: str) -> str:
    """`partial` followed by the check digit that makes it pass the Luhn check."""
    total = 0
    for position, char in enumerate(reversed(partial)):
        digit = int(char)
        if position % 2 == 0:  # doubled once the check digit is appended
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return partial + str((10 - total % 10) % 10)


def _timed(rng: Draws, lines: list[tuple[str, str]]) -> tuple[Phrase, ...]:
    phrases = []
    offset = rng.between(300, 1_200)
    for purpose, text in lines:
        duration = len(text.split()) * rng.between(280, 400) + rng.between(100, 400)  # ms per word, and a lead
        phrases.append(Phrase(purpose, text, offset, duration, round(rng.uniform(0.82, 0.98), 3)))
        offset += duration + rng.between(300, 1_400)
    return tuple(phrases)
