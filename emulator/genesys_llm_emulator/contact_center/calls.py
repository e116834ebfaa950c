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
Python, with no state to keep. Ids are uuid5 names under one fixed namespace; a conversation id
is the uuid5 of its (day, index) with the first 32 bits replaced by an invertible mix of the day
and the index, so any conversation id can be resolved back to its call (for transcript URLs)
without a registry, even by an emulator restarted since the job that listed it.

Shapes follow the public platform API, not only the fields section 9 names:
- the conversation detail record has `conversationId`, `conversationStart`, `conversationEnd`
  (ISO-8601, milliseconds, `Z`), `originatingDirection`, `divisionIds` and four participants,
  `customer`, `ivr`, `acd` and `agent` (with `userId`), each with one `voice` session
  (`sessionId`, `mediaType`, `direction`, `ani`, `dnis`, `recording`, `segments`);
- the transcript belongs to the **customer's voice session**: its `sessionId` is the
  `communicationId` of the transcript URL (the agent's session id has no transcript, nor has a
  call whose sessions say `recording: false`);
- the transcript document uses epoch milliseconds for `conversationStartTime`, `startTime` and
  every `startTimeMs`, `{"milliseconds": n}` objects for `duration` and `offset`, `mediaType`
  `"call"` (where detail sessions say `"voice"`), participants `ivr`/`customer`/`agent`, and
  phrases `external` (customer) / `internal` (agent) with per-word timings and confidences.
"""

from __future__ import annotations

import functools
import hashlib
import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, TypeVar

_T = TypeVar("_T")
NAMESPACE = uuid.UUID("5b0c9d7e-2f4a-5e61-8c3d-a9e7f1b24c60")
COMPANY = "Northwind Communications"
DNIS = "tel:+18005550142"
LANGUAGE = "en-US"
PII_KINDS: tuple[str, ...] = ("card", "email", "phone", "ssn")

_EPOCH = date(1970, 1, 1)
_DAY_MS = 86_400_000
_MAX_DAY_NUMBER = 0xFFFF  # days since 1970 that fit a conversation id (up to 2149)
_MAX_INDEX = 0xFFFF


def named_uuid(name: str) -> str:
    """The uuid5 of `name` under the emulator's namespace: the same in every process."""
    return str(uuid.uuid5(NAMESPACE, name))


ORGANIZATION_ID = named_uuid("organization")
DIVISION_ID = named_uuid("division/home")
IVR_FLOW_ID = named_uuid("flow/main-menu")


def stable_fraction(text: str) -> float:
    """A number in [0, 1) that depends only on `text`."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def iso_ms(epoch_ms: int) -> str:
    """`2026-10-01T08:12:33.123Z`: the platform's timestamp format."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


def epoch_ms(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(milliseconds=1)


def day_start_ms(day: date) -> int:
    return (day - _EPOCH).days * _DAY_MS


def conversations_on(day: date, per_day: int) -> int:
    """How many calls `day` has: `per_day` scaled by a factor in [0.75, 1.25] fixed for that day."""
    day_number = (day - _EPOCH).days
    if not 0 <= day_number <= _MAX_DAY_NUMBER:
        return 0
    return min(_MAX_INDEX + 1, round(per_day * (0.75 + 0.5 * stable_fraction(f"volume/{day.isoformat()}"))))


# -- conversation ids: uuid5 names that say which (day, index) they belong to -----------------

_MASK32 = 0xFFFFFFFF
_MIX_A = 0x9E3779B1
_MIX_B = 0x85EBCA6B
_UNMIX_A = pow(_MIX_A, -1, 2**32)
_UNMIX_B = pow(_MIX_B, -1, 2**32)


def _mix(value: int) -> int:
    value = (value * _MIX_A) & _MASK32
    value ^= value >> 16
    value = (value * _MIX_B) & _MASK32
    return value ^ (value >> 16)


def _unmix(value: int) -> int:
    value ^= value >> 16
    value = (value * _UNMIX_B) & _MASK32
    value ^= value >> 16
    return (value * _UNMIX_A) & _MASK32


def conversation_id(day: date, index: int) -> str:
    """The id of the `index`-th call of `day`."""
    name = uuid.uuid5(NAMESPACE, f"conversation/{day.isoformat()}/{index}")
    prefix = _mix(((day - _EPOCH).days << 16) | index)
    return str(uuid.UUID(hex=f"{prefix:08x}{name.hex[8:]}"))


def locate_conversation(conversation_id_: str) -> tuple[date, int] | None:
    """(day, index) of a conversation id made by `conversation_id`, None for any other string."""
    try:
        parsed = uuid.UUID(conversation_id_)
    except (ValueError, AttributeError, TypeError):
        return None
    key = _unmix(int(parsed.hex[:8], 16))
    day = _EPOCH + timedelta(days=key >> 16)
    index = key & 0xFFFF
    return (day, index) if conversation_id(day, index) == conversation_id_ else None


class _Draws:
    """Deterministic draws from one seed, built on `random.Random.random` alone (whose sequence for
    a string seed is the same on every Python 3), and fast: a year of calls is generated in seconds."""

    def __init__(self, seed: str) -> None:
        self.fraction = random.Random(seed).random

    def between(self, low: int, high: int) -> int:
        """An integer in [low, high]."""
        return low + int(self.fraction() * (high - low + 1))

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self.fraction()

    def pick(self, choices: Sequence[_T]) -> _T:
        return choices[int(self.fraction() * len(choices))]


# -- people and phrase material -----------------------------------------------------------------


@dataclass(frozen=True)
class Agent:
    user_id: str
    name: str

    @property
    def first_name(self) -> str:
        return self.name.split()[0]


_AGENT_NAMES = (
    "Maria Lopez", "James Carter", "Aisha Khan", "Tom Becker", "Priya Natarajan", "Daniel Kim",
    "Sofia Rossi", "Marcus Green", "Hannah Schultz", "Luis Ortega", "Grace O'Neill", "Ethan Walsh",
)
AGENTS: tuple[Agent, ...] = tuple(Agent(named_uuid(f"agent/{name}"), name) for name in _AGENT_NAMES)
_FIRST_NAMES = (
    "Olivia", "Liam", "Emma", "Noah", "Ava", "Elijah", "Mia", "Lucas", "Amelia", "Mason", "Harper",
    "Logan", "Evelyn", "Carlos", "Fatima", "Wei", "Dmitri", "Keisha", "Ravi", "Ingrid",
)
_LAST_NAMES = (
    "Johnson", "Nguyen", "Patel", "Garcia", "Smith", "Okafor", "Miller", "Novak", "Davis", "Haddad",
    "Brown", "Tanaka", "Wilson", "Moreno", "Anderson", "Kowalski", "Clark", "Singh", "Lewis", "Murphy",
)
_AREA_CODES = ("212", "312", "415", "617", "713", "305", "206", "404", "512", "720", "614", "503")
_STREETS = ("Maple Avenue", "Linden Street", "Harbor Road", "Cedar Lane", "Elm Court", "Ridge Drive")
_MAIL_DOMAINS = ("example.com", "example.net", "example.org", "mail.example.com")
_TEST_CARDS = ("4111111111111111", "4012888888881881", "4242424242424242", "5555555555554444", "5105105105105100")


@dataclass(frozen=True)
class Topic:
    name: str
    queue: str
    openers: tuple[str, ...]  # customer
    exchanges: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]  # (agent variants, customer variants)
    resolutions: tuple[str, ...]  # agent
    reactions: tuple[str, ...]  # customer


TOPICS: tuple[Topic, ...] = (
    Topic(
        "billing_dispute",
        "Billing",
        (
            "Hi, I'm calling because my bill this month is way higher than usual and I don't understand why.",
            "Hello, I was charged twice for the same month and I'd like that fixed.",
            "Yeah hi, there's a charge on my statement I don't recognize, something about premium support.",
        ),
        (
            (
                ("I see the statement here. Which charge are you asking about?",
                 "Let me look at the last two invoices side by side."),
                ("It's the forty-nine ninety-nine line, I never ordered anything like that.",
                 "The one from the fifteenth, it's the exact same amount as the payment before it.",
                 "Everything after the monthly plan, I only have the basic package."),
            ),
            (
                ("I can see where that came from. It looks like a one-time add-on was applied to the account.",
                 "You're right, the payment was processed twice on our side."),
                ("Well I definitely didn't ask for it, so I want it taken off.",
                 "So when do I get my money back?",
                 "That's frustrating, this is the second time this year."),
            ),
        ),
        (
            "I've reversed the charge, you'll see a credit on your next statement within one to two billing cycles.",
            "I've submitted a refund for the duplicate payment, it usually takes five to seven business days.",
            "I've removed the add-on and applied a courtesy credit for the trouble.",
        ),
        ("Okay, thank you, that's what I needed.", "Alright, I appreciate you fixing that.",
         "Fine, as long as it doesn't happen again."),
    ),
    Topic(
        "cancellation",
        "Retention",
        (
            "Hi, I'd like to cancel my service please.",
            "Hello, I'm moving in with family and I need to close my account.",
            "I want to cancel, honestly the price keeps going up and I found a cheaper option.",
        ),
        (
            (
                ("I'm sorry to hear you want to leave. Can I ask what's prompting the cancellation?",
                 "I can help with that. Before I do, may I ask the reason?"),
                ("It's mostly the price, it went up twice this year.",
                 "I just don't use it enough anymore.",
                 "The connection drops every evening and I'm tired of calling about it."),
            ),
            (
                ("I do have a loyalty offer that would bring your monthly rate down by twenty dollars for a year.",
                 "There's a lower tier plan that might fit better, it's about half the price."),
                ("Hmm, that's tempting, but I think I still want to cancel.",
                 "Actually, if it's twenty dollars less I'd stay.",
                 "No thanks, I've made up my mind."),
            ),
        ),
        (
            "Understood. I've scheduled the cancellation for the end of your billing cycle, you'll get a confirmation.",
            "I've applied the loyalty discount instead, it starts on your next bill.",
            "Your account is set to close at the end of the month, and there's no early termination fee.",
        ),
        ("Great, thanks for making it easy.", "Okay, thank you.", "Alright, I appreciate it."),
    ),
    Topic(
        "technical_support",
        "Technical Support",
        (
            "Hi, my internet has been dropping out every few minutes since yesterday.",
            "Hello, my TV box is stuck on a loading screen and won't start.",
            "My Wi-Fi is really slow, like barely loading web pages.",
        ),
        (
            (
                ("Let's figure this out. Are the lights on the front of the router solid or blinking?",
                 "I'm sorry about that. Have you tried restarting the equipment yet?"),
                ("The internet light is blinking orange.",
                 "I unplugged it twice already and it didn't help.",
                 "They all look green to me but it's still not working."),
            ),
            (
                ("I'm running a line test from here, give me one moment.",
                 "I'm going to send a refresh signal to the device, it'll reboot in about two minutes."),
                ("Okay, I'll wait.",
                 "It's restarting now, the lights are flashing.",
                 "Alright, it looks like it's coming back."),
            ),
        ),
        (
            "The line test shows a fault outside the house, so I've booked a technician for tomorrow morning.",
            "The signal looks good now and your speeds are back to normal on my end.",
            "I've updated the firmware on the router, that should stop the dropouts.",
        ),
        ("Perfect, it's working again.", "Okay, tomorrow morning works for me.",
         "Thanks, I'll call back if it happens again."),
    ),
    Topic(
        "address_change",
        "Customer Service",
        (
            "Hi, I'm moving next month and need to update my address.",
            "Hello, I want to transfer my service to my new apartment.",
            "I need to change the billing address on my account.",
        ),
        (
            (
                ("Congratulations on the move. What's the new address?",
                 "Sure thing. Where are you moving to?"),
                ("It's a new place over on {street}, same town.",
                 "We're moving to {street}, the apartment on the second floor.",
                 "The new one is on {street}, just a few blocks away."),
            ),
            (
                ("And when would you like service to start at the new address?",
                 "What date do you need the transfer to happen?"),
                ("The first of next month if possible.",
                 "We get the keys on the twelfth.",
                 "As soon as possible, we're already packing."),
            ),
        ),
        (
            "I've scheduled the transfer and the billing address is updated as of today.",
            "Everything's set, service will move over on that date and you don't need a technician.",
            "I've updated the account, you'll get an e-mail confirming the new address.",
        ),
        ("Great, that was easy.", "Thank you so much.", "Perfect, one less thing to worry about."),
    ),
    Topic(
        "delivery_problem",
        "Logistics",
        (
            "Hi, I was supposed to get a new router delivered yesterday and it never showed up.",
            "Hello, the package you sent me arrived damaged.",
            "My tracking says delivered but there's nothing at my door.",
        ),
        (
            (
                ("I'm sorry about that. Let me check the shipment status.",
                 "Let me pull up the tracking information."),
                ("It said out for delivery all day and then nothing.",
                 "The box was crushed and the power cable is missing.",
                 "I checked with the neighbors too, nobody has it."),
            ),
            (
                ("It looks like the carrier marked it delivered at four fifteen in the afternoon.",
                 "I can see the carrier had an exception on the route."),
                ("That's strange, I was home all afternoon.",
                 "So what happens now?",
                 "I really need it this week for work."),
            ),
        ),
        (
            "I've shipped a replacement with express delivery, it should arrive in two business days.",
            "I've opened a claim with the carrier and sent a new unit at no charge.",
            "I've arranged a pickup for the damaged unit and a replacement is on its way.",
        ),
        ("Okay, thank you, I'll keep an eye out for it.", "Great, two days is fine.",
         "Alright, I hope this one makes it."),
    ),
    Topic(
        "password_reset",
        "Technical Support",
        (
            "Hi, I'm locked out of my online account.",
            "Hello, I forgot my password and the reset e-mail never arrives.",
            "I can't log in to the app, it keeps saying invalid credentials.",
        ),
        (
            (
                ("I can help you get back in. When did you last log in successfully?",
                 "No problem. Did you try the forgot password link?"),
                ("Maybe a week ago, it worked fine then.",
                 "Yes, three times, and nothing shows up, not even in spam.",
                 "I think I changed it recently and now I can't remember it."),
            ),
            (
                ("I see the account was locked after several failed attempts. I'm unlocking it now.",
                 "I'm sending a new reset link, it should arrive within a minute."),
                ("Okay, I see it now.", "Got it, it's there.", "Alright, let me try."),
            ),
        ),
        (
            "You should be able to log in now, and I'd recommend turning on two-step verification.",
            "The reset worked, your new password is active.",
            "Your account is unlocked and the reset link is valid for the next hour.",
        ),
        ("That worked, I'm in.", "Great, thank you.", "Perfect, thanks for the help."),
    ),
    Topic(
        "plan_upgrade",
        "Sales",
        (
            "Hi, I'd like to upgrade to a faster internet plan.",
            "Hello, I'm working from home now and I think I need more speed.",
            "I saw an ad for the gigabit plan and wanted to ask about it.",
        ),
        (
            (
                ("Happy to help. How many people and devices are using the connection?",
                 "Sure. What do you mostly use the internet for?"),
                ("Four of us, lots of video calls and streaming.",
                 "Mostly work calls and my kids gaming in the evening.",
                 "Just me, but I upload big files for work."),
            ),
            (
                ("The five hundred megabit plan would fit well, it's fifteen dollars more per month.",
                 "The gigabit plan is on promotion at the moment, first three months at the current price."),
                ("What's the contract length on that?",
                 "That sounds good, let's do it.",
                 "Is there an installation fee?"),
            ),
        ),
        (
            "I've upgraded the plan, the new speed will be active within the hour, no installation needed.",
            "Done, there's no contract and no installation fee, and the promotion is applied.",
            "The upgrade is scheduled for tonight, you'll just need to restart the router tomorrow morning.",
        ),
        ("Great, thank you.", "Awesome, can't wait.", "Perfect, that's exactly what I wanted."),
    ),
)
TOPIC_NAMES: tuple[str, ...] = tuple(topic.name for topic in TOPICS)

_GREETINGS = (
    "Thank you for calling {company}, my name is {agent}. How can I help you today?",
    "Good {part_of_day}, you've reached {company}, this is {agent} speaking. What can I do for you?",
    "Hi, thanks for calling {company}. My name is {agent}, how can I help?",
)
_VERIFY_ASKS = (
    "I can definitely help with that. Can I get your full name so I can pull up the account?",
    "Sorry to hear that. Let me find your account, what's the name on it?",
    "Happy to look into it. Could you verify the name on the account for me?",
)
_VERIFY_ANSWERS = (
    "Sure, it's {customer}.",
    "Yes, {customer}. The account should be under my name.",
    "{customer}. I've been a customer for about {years} years.",
)
_VERIFIED = (
    "Thank you, {first}, I have your account here.",
    "Thanks {first}, I've got it pulled up.",
    "Perfect, thank you {first}.",
)
_ANYTHING_ELSE = ("Is there anything else I can help you with today?", "Anything else I can do for you?")
_NOTHING_ELSE = ("No, that's everything. Thanks for your help.", "No, that's it. Have a good day.",
                 "Nope, that covers it.")
_CLOSINGS = (
    "Thank you for calling {company}, have a great day.",
    "You're welcome, {first}. Take care and thanks for calling.",
    "Glad I could help. Have a good rest of your day.",
)
_PII_ASKS = {
    "email": ("And what's the e-mail address on the account?", "Could you confirm your e-mail address for me?"),
    "phone": ("And a good callback number in case we get disconnected?",
              "Can you confirm the phone number on the account?"),
    "ssn": ("For this change I need to verify your identity. Can you give me your social security number?",
            "I'll need your social security number to verify the account holder."),
    "card": ("Which card would you like to use for the payment?",
             "Can I get the card number you'd like on file?"),
}
_PII_ANSWERS = {
    "email": ("Sure, my e-mail is {value}.", "It's {value}, that's where the bills go."),
    "phone": ("The number on the account is {value}.", "You can call me back at {value}."),
    "ssn": ("Okay, my social is {value}.", "It's {value}."),
    "card": ("The card number is {value}, expiry oh eight twenty-seven.", "Sure, it's {value}."),
}


# -- the calls --------------------------------------------------------------------------------------


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
    rng = _Draws(f"conversation/{day.isoformat()}/{index}")
    # Mostly US business hours (12:00-24:00 UTC, 8am-8pm Eastern), some at any hour; the evening
    # calls near midnight UTC run into the next day.
    second_of_day = rng.uniform(12 * 3600, 86_400) if rng.fraction() < 0.85 else rng.uniform(0, 86_400)
    start_ms = day_start_ms(day) + int(second_of_day * 1000)
    topic, agent = rng.pick(TOPICS), rng.pick(AGENTS)
    first, last = rng.pick(_FIRST_NAMES), rng.pick(_LAST_NAMES)
    ani = f"tel:+1{rng.pick(_AREA_CODES)}555{rng.between(100, 199):04d}"
    ivr_ms, queue_ms, alert_ms = rng.between(15_000, 75_000), rng.between(5_000, 180_000), rng.between(2_000, 9_000)
    pii: tuple[str, ...] = ()
    if stable_fraction(f"pii/{cid}") < pii_ratio:
        pii_rng = _Draws(f"pii/{cid}")
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
    rng: _Draws,
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
        "company": COMPANY, "agent": agent.first_name, "part_of_day": part_of_day, "first": first,
        "customer": f"{first} {last}", "years": rng.between(2, 15), "street": rng.pick(_STREETS),
    }

    def say(purpose: str, variants: tuple[str, ...]) -> tuple[str, str]:
        return purpose, rng.pick(variants).format(**fields)

    lines = [
        say("internal", _GREETINGS),
        say("external", topic.openers),
        say("internal", _VERIFY_ASKS),
        say("external", _VERIFY_ANSWERS),
        say("internal", _VERIFIED),
    ]
    lines.extend(_pii_lines(pii, first, last, cid))
    for agent_variants, customer_variants in topic.exchanges:
        lines.append(say("internal", agent_variants))
        lines.append(say("external", customer_variants))
    lines.append(say("internal", topic.resolutions))
    lines.append(say("external", topic.reactions))
    lines.append(say("internal", _ANYTHING_ELSE))
    lines.append(say("external", _NOTHING_ELSE))
    lines.append(say("internal", _CLOSINGS))
    return lines


def _pii_lines(pii: tuple[str, ...], first: str, last: str, cid: str) -> Iterator[tuple[str, str]]:
    """The agent asking for each kind of PII, the customer giving it, sometimes read back."""
    rng = _Draws(f"pii-values/{cid}")
    for kind in pii:
        value = _pii_value(rng, kind, first, last)
        yield "internal", rng.pick(_PII_ASKS[kind])
        yield "external", rng.pick(_PII_ANSWERS[kind]).format(value=value)
        if kind == "email" and rng.fraction() < 0.5:
            yield "internal", f"Let me read that back: {value}. Is that right?"
            yield "external", "Yes, that's right."


def _pii_value(rng: _Draws, kind: str, first: str, last: str) -> str:
    if kind == "email":
        local = rng.pick((f"{first}.{last}", f"{first[0]}{last}", f"{first}{rng.between(1, 99)}"))
        return f"{local.lower()}@{rng.pick(_MAIL_DOMAINS)}"
    if kind == "phone":
        area, line = rng.pick(_AREA_CODES), f"01{rng.between(0, 99):02d}"
        return rng.pick((f"({area}) 555-{line}", f"{area}-555-{line}", f"+1 {area} 555 {line}"))
    if kind == "ssn":
        area = rng.between(100, 665)  # not 000, 666 or 9xx, which no SSN starts with
        digits = (f"{area:03d}", f"{rng.between(10, 99):02d}", f"{rng.between(1000, 9999):04d}")
        return rng.pick(("-", " ")).join(digits)
    if rng.fraction() < 0.5:
        number = rng.pick(_TEST_CARDS)
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


def _timed(rng: _Draws, lines: list[tuple[str, str]]) -> tuple[Phrase, ...]:
    phrases = []
    offset = rng.between(300, 1_200)
    for purpose, text in lines:
        duration = len(text.split()) * rng.between(280, 400) + rng.between(100, 400)  # ms per word, and a lead
        phrases.append(Phrase(purpose, text, offset, duration, round(rng.uniform(0.82, 0.98), 3)))
        offset += duration + rng.between(300, 1_400)
    return tuple(phrases)


# -- listing --------------------------------------------------------------------------------------


def day_conversations(day: date, per_day: int, pii_ratio: float, unrecorded_ratio: float) -> list[Conversation]:
    """Every call of `day`, by index."""
    return [conversation(day, index, pii_ratio, unrecorded_ratio) for index in range(conversations_on(day, per_day))]


def conversations_between(
    start: datetime,
    end: datetime,
    *,
    per_day: int,
    pii_ratio: float,
    unrecorded_ratio: float,
    start_of_day_matching: bool = False,
    available_until: datetime | None = None,
) -> list[Conversation]:
    """The calls an analytics job for `start/end` finds, by `conversationStart` (then id).

    A call matches when it overlaps the interval (like a detail query, which also finds calls
    that started before the interval); `start_of_day_matching` (the job's
    `startOfDayIntervalMatching`) keeps only calls that started on or after midnight UTC of the
    interval's start day, so day-sized jobs partition calls by start day. Calls that had not
    ended by `available_until` (the data availability date) are never found.
    """
    start_ms, end_ms = epoch_ms(start), epoch_ms(end)
    floor_ms = day_start_ms(start.date()) if start_of_day_matching else None
    until_ms = epoch_ms(available_until) if available_until is not None else None
    found = []
    day = start.date() - timedelta(days=1)  # a call lasts far less than a day
    while day <= end.date():
        for call in day_conversations(day, per_day, pii_ratio, unrecorded_ratio):
            if call.start_ms >= end_ms or call.end_ms <= start_ms:
                continue
            if floor_ms is not None and call.start_ms < floor_ms:
                continue
            if until_ms is not None and call.end_ms > until_ms:
                continue
            found.append(call)
        day += timedelta(days=1)
    found.sort(key=lambda call: (call.start_ms, call.conversation_id))
    return found


def find_conversation(
    conversation_id_: str, *, per_day: int, pii_ratio: float, unrecorded_ratio: float
) -> Conversation | None:
    """The call with this id, None when no day of the contact center has it."""
    located = locate_conversation(conversation_id_)
    if located is None:
        return None
    day, index = located
    if index >= conversations_on(day, per_day):
        return None
    return conversation(day, index, pii_ratio, unrecorded_ratio)


# -- the JSON the platform answers with -------------------------------------------------------------


def detail_record(call: Conversation) -> dict[str, Any]:
    """The call as an analytics conversation detail record (one element of `conversations`)."""
    ivr_end = call.start_ms + call.ivr_ms
    queue_end = ivr_end + call.queue_ms
    end = call.end_ms

    def segment(start: int, stop: int, kind: str, **extra: Any) -> dict[str, Any]:
        return {"segmentStart": iso_ms(start), "segmentEnd": iso_ms(stop), "segmentType": kind, **extra}

    def session(role: str, recording: bool, segments: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "sessionId": call.session_id(role),
            "mediaType": "voice",
            "direction": "inbound",
            "ani": call.ani,
            "dnis": DNIS,
            **extra,
            "recording": recording,
            "segments": segments,
        }

    return {
        "conversationId": call.conversation_id,
        "conversationStart": iso_ms(call.start_ms),
        "conversationEnd": iso_ms(end),
        "originatingDirection": "inbound",
        "divisionIds": [DIVISION_ID],
        "participants": [
            {
                "participantId": call.participant_id("customer"),
                "participantName": call.customer_name,
                "purpose": "customer",
                "sessions": [
                    session(
                        "customer",
                        call.recorded,
                        [
                            segment(call.start_ms, queue_end, "system"),
                            segment(queue_end, end, "interact", disconnectType="client"),
                        ],
                    )
                ],
            },
            {
                "participantId": call.participant_id("ivr"),
                "participantName": "Main Menu",
                "purpose": "ivr",
                "sessions": [
                    session("ivr", False, [segment(call.start_ms, ivr_end, "ivr", disconnectType="transfer")],
                            flowId=IVR_FLOW_ID)
                ],
            },
            {
                "participantId": call.participant_id("acd"),
                "participantName": call.queue,
                "purpose": "acd",
                "sessions": [
                    session("acd", False, [segment(ivr_end, queue_end, "interact", queueId=call.queue_id,
                                                   disconnectType="transfer")])
                ],
            },
            {
                "participantId": call.participant_id("agent"),
                "participantName": call.agent.name,
                "purpose": "agent",
                "userId": call.agent.user_id,
                "sessions": [
                    session(
                        "agent",
                        call.recorded,
                        [
                            segment(queue_end, call.talk_start_ms, "alert", queueId=call.queue_id),
                            segment(call.talk_start_ms, end, "interact", queueId=call.queue_id,
                                    disconnectType="peer"),
                        ],
                    )
                ],
            },
        ],
    }


def transcript_document(call: Conversation) -> dict[str, Any]:
    """The speech-and-text-analytics transcript of the call's customer communication."""
    talk_start, ivr_end = call.talk_start_ms, call.start_ms + call.ivr_ms
    phrases = []
    for index, phrase in enumerate(call.phrases):
        start = talk_start + phrase.offset_ms
        phrases.append(
            {
                "phraseIndex": index,
                "participantPurpose": phrase.purpose,
                "text": phrase.text,
                "stability": 1.0,
                "confidence": phrase.confidence,
                "offset": {"milliseconds": phrase.offset_ms},
                "startTimeMs": start,
                "duration": {"milliseconds": phrase.duration_ms},
                "words": _words(call, index, phrase, start),
            }
        )
    return {
        "organizationId": ORGANIZATION_ID,
        "conversationId": call.conversation_id,
        "communicationId": call.communication_id,
        "recordingId": call.recording_id,
        "mediaType": "call",
        "conversationStartTime": call.start_ms,
        "startTime": talk_start,
        "duration": {"milliseconds": call.talk_ms},
        "participants": [
            {"participantPurpose": "ivr", "flowId": IVR_FLOW_ID, "startTimeMs": call.start_ms, "endTimeMs": ivr_end},
            {
                "participantPurpose": "customer",
                "initialDirection": "inbound",
                "ani": call.ani,
                "dnis": DNIS,
                "startTimeMs": call.start_ms,
                "endTimeMs": call.end_ms,
            },
            {
                "participantPurpose": "agent",
                "userId": call.agent.user_id,
                "queueId": call.queue_id,
                "divisionId": DIVISION_ID,
                "startTimeMs": talk_start,
                "endTimeMs": call.end_ms,
            },
        ],
        "transcripts": [
            {
                "transcriptId": call.transcript_id,
                "language": LANGUAGE,
                "engineId": "Genesys",
                "startTime": talk_start,
                "duration": {"milliseconds": call.talk_ms},
                "phrases": phrases,
            }
        ],
    }


def _words(call: Conversation, index: int, phrase: Phrase, start: int) -> list[dict[str, Any]]:
    """Per-word timings spread over the phrase by word length, with confidences near the phrase's."""
    rng = _Draws(f"words/{call.conversation_id}/{index}")
    words = phrase.text.split()
    weights = [len(word) + 2 for word in words]
    total = sum(weights)
    out, elapsed = [], 0
    for word, weight in zip(words, weights):
        duration = phrase.duration_ms * weight // total
        confidence = min(0.999, max(0.5, phrase.confidence + rng.uniform(-0.08, 0.05)))
        out.append(
            {
                "word": word,
                "confidence": round(confidence, 3),
                "offset": {"milliseconds": phrase.offset_ms + elapsed},
                "startTimeMs": start + elapsed,
                "duration": {"milliseconds": duration},
            }
        )
        elapsed += duration
    return out
