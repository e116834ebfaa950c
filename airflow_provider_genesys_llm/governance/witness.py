"""Witnessed chain heads: what the chain looked like to the task that last appended, kept elsewhere.

The hash chain proves that rows were not changed *relative to each other*. A role that owns the
tables can still delete the newest rows and roll the head back, wipe everything, drop and recreate
the tables, or rewrite the whole history with fresh, consistent hashes; the tables then verify.
What the tables cannot show is what they used to hold. So every task that appends publishes the
head it left (``seq`` and ``record_hash``) where the database role cannot reach: its task log
(a ``GENESYS_AUDIT_HEAD {json}`` line), its XCom manifest and its asset event. Given those heads,
``verify_chain`` checks that the row at each witnessed ``seq`` still carries the witnessed hash;
because each hash covers every row before it, one matching head vouches for the whole prefix.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..client.validation_errors import validation_problems
from .canonical import canonical_json

#: Prefix of the task log line that publishes a head, for log search and ``--witness-log``.
HEAD_LOG_PREFIX = "GENESYS_AUDIT_HEAD "
#: ``prev_hash`` of the first row; the head of an empty chain.
GENESIS_HASH = "0" * 64

#: ``(first bad seq, description)``.
Problem = tuple[int, str]


class WitnessFormatError(ValueError):
    """A witness file or log holds something that claims to be a head and is not; fix or drop that line."""


class ChainHead(BaseModel):
    """Where the chain ``schema.table`` ended after an append: the last ``seq`` and its ``record_hash``."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    schema_name: str = Field(alias="schema", min_length=1)
    table: str = Field(min_length=1)
    seq: int = Field(ge=0)
    record_hash: str = Field(pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _genesis_is_empty(self) -> ChainHead:
        if (self.seq == 0) != (self.record_hash == GENESIS_HASH):
            raise ValueError("seq=0 is the empty chain and only it has the all-zero record_hash")
        return self

    @property
    def chain(self) -> str:
        return f"{self.schema_name}.{self.table}"

    def to_dict(self) -> dict[str, str | int]:
        """``{"schema", "table", "seq", "record_hash"}``: for an XCom manifest or an asset event's extra."""
        return self.model_dump(by_alias=True)

    def to_json(self) -> str:
        """One line of canonical JSON: ``{"record_hash":...,"schema":...,"seq":...,"table":...}``."""
        return canonical_json(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> ChainHead:
        return cls.model_validate_json(text)

    def to_log_line(self) -> str:
        """``GENESYS_AUDIT_HEAD {...}``, the line a task logs after appending."""
        return HEAD_LOG_PREFIX + self.to_json()


def heads_from_log_lines(lines: Iterable[str], source: str = "log") -> list[ChainHead]:
    """Every head published in ``lines`` of a task log, plain text or Airflow 3's JSON lines.

    A JSON line's message is its ``event`` field; a plain line may carry a timestamp and level
    before the prefix. Text after the head's JSON is ignored. A line with the prefix but no valid
    head raises: a damaged witness must not pass unnoticed as no witness.
    """
    heads = []
    for number, line in enumerate(lines, 1):
        message = _message(line)
        start = message.find(HEAD_LOG_PREFIX)
        if start < 0:
            continue
        try:
            value, _ = json.JSONDecoder().raw_decode(message, start + len(HEAD_LOG_PREFIX))
            heads.append(ChainHead.model_validate(value))
        except ValueError as exc:  # JSONDecodeError and ValidationError both are
            raise WitnessFormatError(f"{source} line {number}: {HEAD_LOG_PREFIX.strip()} {_reason(exc)}") from None
    return heads


def heads_from_json_lines(lines: Iterable[str], source: str = "witness file") -> list[ChainHead]:
    """Heads exported one JSON object per line (``ChainHead.to_json``); blank lines are skipped."""
    heads = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                heads.append(ChainHead.from_json(line))
            except ValueError as exc:
                raise WitnessFormatError(f"{source} line {number}: {_reason(exc)}") from None
    return heads


def read_heads(witness_files: Iterable[Path] = (), witness_logs: Iterable[Path] = ()) -> list[ChainHead]:
    """Heads from exported JSON-lines files and from task log files, in the order given."""
    heads = []
    for path in witness_files:
        with path.open(encoding="utf-8") as lines:
            heads += heads_from_json_lines(lines, str(path))
    for path in witness_logs:
        with path.open(encoding="utf-8", errors="replace") as lines:
            heads += heads_from_log_lines(lines, str(path))
    return heads


def _message(line: str) -> str:
    text = line.strip()
    if text.startswith("{"):
        try:
            entry = json.loads(text)
        except ValueError:
            return text
        event = entry.get("event") if isinstance(entry, dict) else None
        if isinstance(event, str):
            return event
    return text


def _reason(exc: ValueError) -> str:
    """What is wrong, without echoing the input (a log line may hold anything)."""
    if isinstance(exc, ValidationError):
        return f"is not a chain head ({validation_problems(exc, whole='head', limit=1)})"
    return "is not followed by a JSON object"


class WitnessCheck:
    """Compares one chain's rows with the heads witnessed for it, during a verification walk."""

    def __init__(self, chain: str, heads: Iterable[ChainHead]) -> None:
        self._expected: dict[int, set[str]] = {}
        self.count = 0
        for head in heads:
            if head.chain == chain and head.seq > 0:
                self._expected.setdefault(head.seq, set()).add(head.record_hash)
                self.count += 1
        self._last_matching = 0

    def check_row(self, seq: int, record_hash: str) -> Problem | None:
        """A witnessed row must still carry the witnessed hash; a rewrite anywhere before it shows here."""
        witnessed = self._expected.get(seq)
        if witnessed is None:
            return None
        if witnessed != {record_hash}:
            other = sorted(witnessed - {record_hash})[0]
            return seq, (
                f"row seq={seq} is not the row a witness saw: its record_hash is {record_hash[:16]}..., "
                f"the witnessed head has {other[:16]}...; the rows after seq={self._last_matching} "
                "(the last witnessed head that matches) up to this one were rewritten"
            )
        self._last_matching = seq
        return None

    def check_end(self, last_seq: int) -> Problem | None:
        """Rows a witness saw that are gone: truncation with the head rolled back, a wipe, a drop."""
        if not self._expected or max(self._expected) <= last_seq:
            return None
        witnessed = max(self._expected)
        if last_seq == 0:
            return 1, (
                f"the chain is empty but a witness saw it reach seq={witnessed}: "
                "its tables were wiped, or dropped and recreated"
            )
        return last_seq + 1, (
            f"the chain ends at seq={last_seq} but a witness saw it reach seq={witnessed}: "
            f"rows seq={last_seq + 1}..{witnessed} were deleted and the head table rolled back"
        )
