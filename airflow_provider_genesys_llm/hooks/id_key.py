"""The per-deployment id key, read from an Airflow Variable (see ``governance.keys``)."""

from __future__ import annotations

from airflow.sdk import Variable
from airflow.sdk.log import mask_secret

from ..governance.keys import IdKey, IdKeyError

#: The Variable that holds the HMAC key for result ids, request ids and prompt fingerprints.
ID_KEY_VARIABLE = "genesys_llm_id_key"


def get_id_key(variable: str = ID_KEY_VARIABLE) -> IdKey:
    """The deployment's id key; fails before any spend, naming the Variable and how to set it.

    The value is registered with Airflow's secrets masker first, so it is redacted wherever it
    might be printed.
    """
    value = Variable.get(variable, default=None)
    if not value:
        raise IdKeyError(
            f"Airflow Variable {variable!r} (the HMAC key for result ids and prompt fingerprints) is not set; "
            f"create it once per deployment and keep it: airflow variables set {variable} "
            "\"$(python -c 'import secrets; print(secrets.token_hex(32))')\" "
            f"(or export AIRFLOW_VAR_{variable.upper()})"
        )
    mask_secret(value, name=variable)
    return IdKey(value)
