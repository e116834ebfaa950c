"""Keyed ids and fingerprints, and the masked previews kept in Airflow's rendered-template store."""

from __future__ import annotations

import hashlib
import json

import pytest
from batch_items import TEST_ID_KEY, TEST_ID_KEY_TEXT

from airflow_provider_genesys_llm.batch.items import result_id_for
from airflow_provider_genesys_llm.client import CompletionRequest, Message
from airflow_provider_genesys_llm.governance.completion import prompt_fingerprint
from airflow_provider_genesys_llm.governance.keys import IdKey, IdKeyError
from airflow_provider_genesys_llm.governance.masking import PiiMasker
from airflow_provider_genesys_llm.rendered_fields import masked_preview

TEMPLATE = "Summarise the call of the customer with SSN 123-45-{last4}."


def request_for(text: str) -> CompletionRequest:
    return CompletionRequest(model="genesys-llm-v2", messages=(Message(role="user", content=text),), request_id="r")


def test_a_short_key_is_refused_and_no_message_or_repr_shows_a_key() -> None:
    with pytest.raises(IdKeyError, match="has 5 bytes, at least 16") as caught:
        IdKey("short")
    assert "short" not in str(caught.value)
    key = IdKey("a-deployment-key-that-is-long-enough")
    assert "deployment" not in repr(key) and "deployment" not in str(key) and "deployment" not in f"{key}"


def test_a_known_template_does_not_reveal_the_last_four_digits_without_the_key() -> None:
    secret = "6789"
    target = result_id_for("case-1", request_for(TEMPLATE.format(last4=secret)), TEST_ID_KEY)

    def unkeyed(last4: str) -> str:  # the id scheme before keys: a plain hash of the same identity
        identity = {"source_id": "case-1", "prompt": TEMPLATE.format(last4=last4)}
        return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:32]

    guesses = [f"{n:04d}" for n in range(10_000)]
    attacker_key = IdKey("an-attacker-guessing-the-key-0000")
    assert not [g for g in guesses if unkeyed(g) == target]
    assert not [
        g for g in guesses if result_id_for("case-1", request_for(TEMPLATE.format(last4=g)), attacker_key) == target
    ]
    # With the deployment's key the same search succeeds: the key is what protects the id.
    found = [
        g for g in guesses if result_id_for("case-1", request_for(TEMPLATE.format(last4=g)), TEST_ID_KEY) == target
    ]
    assert found == [secret]


def test_ids_are_stable_per_key_and_purposes_never_collide() -> None:
    request = request_for("Refund the double charge.")
    assert result_id_for("c", request, TEST_ID_KEY) == result_id_for("c", request, IdKey(TEST_ID_KEY_TEXT))
    assert result_id_for("c", request, TEST_ID_KEY) != result_id_for("c", request, IdKey("another-deployment-key-1234"))
    assert result_id_for("c", request, TEST_ID_KEY) != result_id_for("d", request, TEST_ID_KEY)
    fingerprint = prompt_fingerprint(TEST_ID_KEY, request)
    assert len(fingerprint) == 64 and not fingerprint.startswith(result_id_for("c", request, TEST_ID_KEY))
    assert fingerprint == prompt_fingerprint(TEST_ID_KEY, request.model_copy(update={"request_id": "other"}))
    assert fingerprint != prompt_fingerprint(TEST_ID_KEY, request_for("Refund the double charge!"))


def test_previews_mask_every_string_and_stop_at_the_budget() -> None:
    items = [
        {"id": f"case-{n}", "text": f"card 4111 1111 1111 1111 mail jane{n}@example.com", "n": n, "ok": True}
        for n in range(10_000)
    ]
    preview = masked_preview(items, PiiMasker(), budget=500)
    shown = json.dumps(preview)
    assert "4111" not in shown and "@example.com" not in shown and "[REDACTED:CARD]" in shown
    assert preview[-1].endswith("more item(s) not shown") and len(preview) < 20
    assert preview[0]["n"] == 0 and preview[0]["ok"] is True
    assert masked_preview({"note": "SSN 123-45-6789"}, PiiMasker(), budget=500) == {"note": "SSN [REDACTED:SSN]"}
