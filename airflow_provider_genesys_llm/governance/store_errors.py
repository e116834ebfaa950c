"""One error policy for every Postgres store: the operation, the table, Postgres' primary message
and the SQLSTATE, never the server's DETAIL (for a refused row it quotes the whole row, PII
included), and whether a retry can help.

It lives in ``governance`` because that is the lowest core package that talks to Postgres: the
audit chain (here) and the sinks (which already import ``governance``) share it. psycopg is not
imported here, so importing governance still needs no database driver.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import psycopg

_E = TypeVar("_E", bound="StoreError")

#: SQLSTATE classes a retry cannot fix: data exceptions, integrity constraint violations (a CHECK
#: or trigger refusing the row), syntax/access rule errors (missing table, column, privilege),
#: WITH CHECK OPTION violations. A PL/pgSQL ``RAISE`` (class P0) says nothing general: the store
#: that raises it decides (``transient=``).
PERMANENT_SQLSTATE_CLASSES = frozenset({"22", "23", "42", "44"})


def postgres_reason(exc: psycopg.Error) -> str:
    """``exc`` as text that quotes no row: the primary message and SQLSTATE of a server error; the
    text of a client-side one (a failed connect, a lost connection), which holds no row values."""
    if exc.sqlstate:
        return f"{exc.diag.message_primary or type(exc).__name__} (SQLSTATE {exc.sqlstate})"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class StoreError(RuntimeError):
    """A Postgres store operation failed; the message says which, on which table, and why.

    Raise it ``from None``: a chained psycopg error would put the DETAIL back into a logged
    traceback. ``transient`` tells a caller whether a later attempt may succeed.
    """

    def __init__(self, message: str, *, sqlstate: str | None = None, transient: bool | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self._transient = transient

    @classmethod
    def wrap(cls: type[_E], operation: str, table: str, exc: psycopg.Error) -> _E:
        """The store's error for ``exc``, raised while doing ``operation`` on ``table``."""
        message = f"{operation} on {table} failed: {type(exc).__name__}: {postgres_reason(exc)}"
        return cls(message, sqlstate=exc.sqlstate)

    @property
    def transient(self) -> bool:
        """Whether a later attempt may succeed: not for refused data, constraints or a wrong schema.
        An error without a SQLSTATE (connection lost, server gone) may. ``transient=`` overrides."""
        if self._transient is not None:
            return self._transient
        return (self.sqlstate or "")[:2] not in PERMANENT_SQLSTATE_CLASSES


@contextmanager
def wrapped_errors(error: type[StoreError], operation: str, table: str) -> Iterator[None]:
    """Inside the block, a psycopg error becomes ``error`` naming ``operation`` and ``table``."""
    import psycopg  # the postgres extra: only a store that is used needs it

    try:
        yield
    except psycopg.Error as exc:
        raise error.wrap(operation, table, exc) from None
