"""``erase_conversations``: the erasure of ``sinks/erasure.py`` on an Airflow Postgres connection."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..governance.masking import PiiMasker
from ..sinks.erasure import ErasureReport, ErasureTargets, TombstoneList, erase
from .id_key import ID_KEY_VARIABLE, get_id_key
from .postgres import postgres_connect


class ErasureHookMixin:
    """Erasure methods of ``GenesysLLMHook``; the tables live on a Postgres connection of their own."""

    #: The hook's governance masked the stored source ids; erasure counts the ids that masking alters.
    governance: Any

    def erase_conversations(
        self,
        ids: Iterable[str],
        *,
        postgres_conn_id: str,
        targets: ErasureTargets | None = None,
        id_key_variable: str = ID_KEY_VARIABLE,
        audit_fields: Mapping[str, Any] | None = None,
        vacuum: bool = True,
    ) -> ErasureReport:
        """Delete everything derived from ``ids`` (conversation or source ids) in one transaction,
        tombstone them and append an audit record holding only their keyed hashes."""
        masker: PiiMasker = self.governance.masker if self.governance is not None else PiiMasker()
        return erase(
            postgres_connect(postgres_conn_id),
            ids,
            get_id_key(id_key_variable),
            targets=targets,
            masker=masker,
            audit_fields=audit_fields,
            vacuum=vacuum,
        )

    def get_tombstones(
        self, *, postgres_conn_id: str, schema: str = "public", id_key_variable: str = ID_KEY_VARIABLE
    ) -> TombstoneList:
        """The erased ids' tombstones, to filter items before an enrichment (``filter_items``)."""
        return TombstoneList.load(postgres_connect(postgres_conn_id), get_id_key(id_key_variable), schema=schema)
