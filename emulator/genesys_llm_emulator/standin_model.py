"""The emulator's stand-in language model: answers that follow from the transcript it is given.

Search over enriched transcripts embeds the stored summaries, so a summary of random words makes
every query return unrelated rows. This model reads the transcript (the request's user messages)
with fixed rules instead, no model download and no randomness: keyword rules pick the intent
(refund, cancellation, technical issue, ...) and the sentiment from what the customer says, and
an extractive summary keeps the transcript sentences that carry the intent, in their original
order, behind a short lead sentence naming it. The same transcript always gets the same reading.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

#: Intent labels and the patterns that vote for them, in precedence order (a tie goes to the
#: earlier one: a refund asked for on a bill is a refund request, not a billing question).
INTENT_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "refund_request",
        (
            r"\brefund",
            r"\bmoney back\b",
            r"\bcharged (me )?twice\b",
            r"\bdouble[- ]charg",
            r"\bduplicate (payment|charge)",
            r"\breimburs",
            r"\breverse[ds]? the charge",
        ),
    ),
    ("cancellation", (r"\bcancel", r"\bclose my account\b", r"\bterminat", r"\bcheaper option\b", r"\bleave\b")),
    (
        "technical_issue",
        (
            r"\binternet\b",
            r"\bwi-?fi\b",
            r"\brouter\b",
            r"\bdrop(s|ping)?( out)?\b",
            r"\bslow\b",
            r"\boutage\b",
            r"\bnot working\b",
            r"\bwon't start\b",
            r"\bstuck\b",
            r"\berror\b",
            r"\bcrash",
            r"\blogs me out\b",
            r"\btechnician\b",
            r"\bfirmware\b",
            r"\bline test\b",
        ),
    ),
    (
        "billing_question",
        (
            r"\bbill(s|ing)?\b(?! address)",
            r"\binvoice\b",
            r"\bcharges?\b",
            r"\bstatement\b",
            r"\badd-on\b",
        ),
    ),
    ("address_change", (r"\baddress\b", r"\bmov(e|ed|ing)\b", r"\bnew apartment\b", r"\btransfer my service\b")),
    (
        "delivery_problem",
        (
            r"\bdeliver",
            r"\bparcel\b",
            r"\bpackage\b",
            r"\bshipment\b",
            r"\btracking\b",
            r"\bcarrier\b",
            r"\bnever (arrived|showed up)\b",
        ),
    ),
    ("account_access", (r"\bpassword\b", r"\blocked out\b", r"\blog ?in\b", r"\bcredentials\b", r"\breset link\b")),
    ("plan_change", (r"\bupgrade", r"\bfaster\b", r"\bgigabit\b", r"\bplan\b", r"\bmegabit\b", r"\bmore speed\b")),
)
GENERAL_INTENT = "general_inquiry"
INTENTS: tuple[str, ...] = (*(name for name, _ in INTENT_RULES), GENERAL_INTENT)
SENTIMENTS: tuple[str, ...] = ("positive", "neutral", "negative")

_POSITIVE = re.compile(
    r"\b(thanks?|thank you|great|perfect|appreciate\w*|awesome|happy|glad|excellent|easy|wonderful|love|"
    r"helpful|that worked|working again|exactly what i wanted)\b",
    re.IGNORECASE,
)
_NEGATIVE = re.compile(
    r"\b(frustrat\w*|angry|upset|annoy\w*|terrible|awful|ridiculous|unacceptable|disappoint\w*|furious|worst|"
    r"useless|never (arrived|showed up)|not happy|complain\w*|damaged|crushed|wrong|don't understand|"
    r"didn't ask|definitely didn't|way higher|don't recognize|locked out|can't|won't|keeps? (going up|saying))\b",
    re.IGNORECASE,
)
_RULES = tuple(
    (name, tuple(re.compile(pattern, re.IGNORECASE) for pattern in patterns)) for name, patterns in INTENT_RULES
)

#: What a summary opens with, per intent; the variant depends on the request (like sampling).
LEADS: dict[str, tuple[str, ...]] = {
    "refund_request": ("Customer asks for a refund.", "The customer wants money back for a charge."),
    "cancellation": ("Customer wants to cancel the service.", "The customer asks to cancel the account."),
    "technical_issue": ("Customer reports a technical problem.", "The customer's service is not working properly."),
    "billing_question": ("Customer questions a bill.", "The customer asks about charges on the bill."),
    "address_change": ("Customer needs an address change.", "The customer is moving and updates the address."),
    "delivery_problem": ("Customer reports a delivery problem.", "The customer's shipment did not arrive as promised."),
    "account_access": ("Customer cannot access the account.", "The customer is locked out and needs a new password."),
    "plan_change": ("Customer wants to change plan.", "The customer asks about upgrading the plan."),
    GENERAL_INTENT: ("Customer has a general question.", "The customer asks for information."),
}
#: What fills an answer once the transcript has nothing more to say (answers have a fixed length).
FILLER = "No further details were given."

_SPEAKER = re.compile(r"^\s*([A-Za-z][A-Za-z ]{0,19}):\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_SKIPPED_SPEAKERS = frozenset({"ivr", "system"})
_CUSTOMER_SPEAKERS = frozenset({"customer", "caller", "user", "external"})


@dataclass(frozen=True)
class Sentence:
    position: int
    speaker: str | None
    text: str

    @property
    def by_customer(self) -> bool:
        return self.speaker is None or self.speaker in _CUSTOMER_SPEAKERS


@dataclass(frozen=True)
class Reading:
    """What the stand-in model makes of a transcript."""

    sentiment: str
    intent: str
    #: Transcript sentences by importance (most important first), ties in transcript order.
    ranked: tuple[Sentence, ...]

    def summary(self, opening: list[str], budget: int) -> list[str]:
        """The ``opening`` sentences, then the most important transcript sentences that fit in
        ``budget`` tokens (a word each, plus one per sentence end) in transcript order. The
        first-ranked sentence is kept even when it alone is too long: the caller cuts it."""
        chosen: list[Sentence] = []
        used = sum(_size(text) for text in opening)
        for sentence in self.ranked:
            if used + _size(sentence.text) <= budget or not chosen:
                chosen.append(sentence)
                used += _size(sentence.text)
        return [*opening, *(sentence.text for sentence in sorted(chosen, key=lambda s: s.position))]


def read(transcript: str) -> Reading:
    """Intent, sentiment and ranked sentences of ``transcript`` (``Speaker: text`` lines or prose)."""
    sentences = list(_sentences(transcript))
    customer = [s for s in sentences if s.by_customer]
    customer_text = " ".join(s.text for s in customer)
    intent = _intent(customer) or _intent(sentences) or GENERAL_INTENT
    positive = len(_POSITIVE.findall(customer_text))
    negative = len(_NEGATIVE.findall(customer_text))
    sentiment = "positive" if positive > negative else "negative" if negative > positive else "neutral"
    scored = [(_salience(sentence, intent), sentence) for sentence in sentences]
    ranked = [
        sentence for score, sentence in sorted(scored, key=lambda pair: (-pair[0], pair[1].position)) if score > 0
    ]
    return Reading(sentiment, intent, tuple(ranked))


def _sentences(transcript: str) -> Iterable[Sentence]:
    position = 0
    for line in transcript.splitlines():
        speaker_match = _SPEAKER.match(line)
        speaker = speaker_match.group(1).strip().lower() if speaker_match else None
        if speaker in _SKIPPED_SPEAKERS:
            continue
        body = line[speaker_match.end() :] if speaker_match else line
        for text in _SENTENCE_END.split(body.strip()):
            text = text.strip().rstrip(".!?").strip()
            if text:
                yield Sentence(position, speaker, text)
                position += 1


def _size(sentence: str) -> int:
    return len(sentence.split()) + 1


def _votes(text: str) -> dict[str, int]:
    return {name: sum(len(pattern.findall(text)) for pattern in patterns) for name, patterns in _RULES}


def _intent(sentences: list[Sentence]) -> str | None:
    """The intent with most votes; the first sentence that votes at all (why the customer called)
    counts three times, so a later aside ("that's where the bills go") does not outvote it."""
    votes = dict.fromkeys(INTENTS, 0)
    opener_seen = False
    for sentence in sentences:
        found = _votes(sentence.text)
        weight = 1 if opener_seen or not any(found.values()) else 3
        opener_seen = opener_seen or any(found.values())
        for name, count in found.items():
            votes[name] += weight * count
    best = max(votes.values())
    return next(name for name, count in votes.items() if count == best) if best else None


def _salience(sentence: Sentence, intent: str) -> int:
    """Votes for the call's intent count most, other intents a little, and the customer's feelings
    a little (an agent's "thanks for calling" is politeness, not sentiment). Sentences with none
    of these (greetings, verification) score 0 and are never part of a summary."""
    votes = _votes(sentence.text)
    score = 3 * votes.get(intent, 0) + sum(count for name, count in votes.items() if name != intent)
    if sentence.by_customer:
        feelings = len(_POSITIVE.findall(sentence.text)) + len(_NEGATIVE.findall(sentence.text))
        score += feelings + (1 if score + feelings else 0)
    return score
