"""The emulator's stand-in model answers from the transcript, so stored summaries can be searched."""

from __future__ import annotations

import ast
import json
import sqlite3
import subprocess
import sys
from collections import Counter
from datetime import date
from pathlib import Path

import httpx
import psycopg
import pytest
from airflow_runner import airflow_env, dags_test

from airflow_provider_genesys_llm.client.transcripts import SPEAKERS
from airflow_provider_genesys_llm.sinks.pgvector import PgVectorStore
from genesys_llm_emulator import contact_center, standin_model
from genesys_llm_emulator.generator import Insertion, completion_tokens, embed
from genesys_llm_emulator.validation import ChatMessage, CompletionRequest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN_ROOTS = {"airflow_provider_genesys_llm", "airflow"}
QUERY = "customer wants a refund for a double charge"
#: The intent each synthetic contact-center topic should be read as.
EXPECTED_INTENTS = {
    "billing_dispute": {"refund_request", "billing_question"},
    "cancellation": {"cancellation"},
    "technical_support": {"technical_issue"},
    "address_change": {"address_change"},
    "delivery_problem": {"delivery_problem"},
    "password_reset": {"account_access"},
    "plan_upgrade": {"plan_change"},
}


def request(text: str, *, json_output: bool = True, temperature: float = 0.2) -> CompletionRequest:
    return CompletionRequest(
        "r",
        "genesys-llm-v2",
        1024,
        temperature,
        (ChatMessage("system", "Answer in JSON."), ChatMessage("user", text)),
        json_output=json_output,
    )


def calls(days: int = 3) -> list[tuple[str, str]]:
    """(topic, transcript text as landed) of the emulator's synthetic calls."""
    found = []
    for offset in range(days):
        for call in contact_center.day_conversations(date(2026, 11, 1 + offset), 40, 0.2, 0.0):
            text = "\n".join(f"{SPEAKERS.get(p.purpose, 'Speaker')}: {p.text}" for p in call.phrases)
            found.append((call.topic, text))
    return found


def test_every_synthetic_topic_is_read_as_its_intent() -> None:
    readings = [(topic, standin_model.read(text).intent) for topic, text in calls()]
    wrong = Counter((topic, intent) for topic, intent in readings if intent not in EXPECTED_INTENTS[topic])
    assert len(readings) > 100 and not wrong, wrong
    assert {intent for _, intent in readings} >= {"refund_request", "billing_question"}


@pytest.mark.parametrize(
    ("text", "sentiment"),
    [
        ("Customer: This is ridiculous, I'm really frustrated with the bill.", "negative"),
        ("Customer: Great, thank you, that was easy.\nAgent: Sorry about the wait.", "positive"),
        ("Customer: I need to update my address.\nAgent: Thanks for calling, terrible weather today.", "neutral"),
    ],
)
def test_sentiment_is_the_customers(text: str, sentiment: str) -> None:
    assert standin_model.read(text).sentiment == sentiment


@pytest.mark.parametrize("count", [1, 5, 17, 18, 48, 200])
def test_json_answers_parse_have_the_three_keys_and_exact_length(count: int) -> None:
    awkward = 'Customer: He said "refund me" \\ now; emoji \u2603 and tab\there.\nAgent: I\'ve reversed the charge.'
    for _, text in [*calls(1)[:10], ("", awkward)]:
        for insertion in (None, Insertion('card "4111 1111 1111 1111"\\', 3)):
            tokens = completion_tokens(request(text), count, insertion)
            # Never shorter than the JSON frame with one summary token (18): max_tokens cuts the rest.
            assert len(tokens) == max(count, 18) + (0 if insertion is None else 3)
            answer = json.loads("".join(tokens))
            assert list(answer) == ["sentiment", "intent", "summary"]
            assert answer["sentiment"] in standin_model.SENTIMENTS and answer["intent"] in standin_model.INTENTS
            if insertion is not None:
                assert insertion.text in answer["summary"]


def test_the_summary_is_the_transcripts_own_sentences_behind_a_lead() -> None:
    for topic, text in calls(1):
        answer = json.loads("".join(completion_tokens(request(text), 120)))
        lead, *rest = answer["summary"].split(". ")
        assert lead + "." in standin_model.LEADS[answer["intent"]]
        sentences = [s for s in rest if s.rstrip(".") and not standin_model.FILLER.startswith(s.rstrip("."))]
        assert sentences, topic
        assert all(sentence.rstrip(".") in text for sentence in sentences)


def test_text_answers_name_the_sentiment_and_are_the_same_in_another_process() -> None:
    text = "Customer: I was charged twice and I am really frustrated."
    answer = "".join(completion_tokens(request(text, json_output=False), 30))
    assert (
        answer.startswith(("Customer asks for a refund.", "The customer wants money back"))
        and "Sentiment is negative." in answer
    )
    code = (
        "from genesys_llm_emulator.generator import completion_tokens;"
        "from genesys_llm_emulator.validation import ChatMessage, CompletionRequest;"
        "r = CompletionRequest('r', 'genesys-llm-v2', 1024, 0.2,"
        f" (ChatMessage('system', 'Answer in JSON.'), ChatMessage('user', {text!r})));"
        "print(''.join(completion_tokens(r, 30)), end='')"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONHASHSEED": "123", **_env()},
    )
    assert other.returncode == 0, other.stderr
    assert other.stdout == answer


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def test_the_emulator_imports_nothing_from_the_provider() -> None:
    """The emulator is its own distribution: it may import neither the provider nor Airflow."""
    offending = []
    package = ROOT / "emulator" / "genesys_llm_emulator"
    paths = sorted(package.rglob("*.py"))
    assert len(paths) > 10, "the emulator package moved: update this test"
    for path in paths:
        depth = len(path.relative_to(package).parts)  # 1 in the package, 2 in a subpackage
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level <= depth else ["relative import above the package"]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            offending += [f"{path.name}: {name}" for name in names if name.partition(".")[0] in FORBIDDEN_ROOTS]
            offending += [f"{path.name}: {name}" for name in names if name.startswith("relative")]
    assert offending == []


def test_lexical_search_over_stand_in_summaries_ranks_refunds_first() -> None:
    """Without Airflow: the contact center's calls, summarised and embedded like the pipeline does."""
    summaries = []
    for _, text in calls(2):
        answer = json.loads("".join(completion_tokens(request(text), 48)))
        summaries.append((answer["intent"], answer["summary"]))
    query = embed(QUERY, 384)
    ranked = sorted(summaries, key=lambda s: -sum(a * b for a, b in zip(query, embed(s[1], 384), strict=True)))
    assert ranked[0][0] == "refund_request"
    assert any(intent != "refund_request" for intent, _ in summaries)


def test_demo_dag_search_returns_a_refund_first(airflow_home, emulator, pg_server) -> None:
    """The real path: the demo DAG enriches its transcripts through the gateway (JSON answers,
    `embed="json:summary"`) into pgvector, and the query's nearest stored summary is a refund."""
    env = airflow_env(airflow_home, ROOT / "dags_examples", emulator, pg_server)
    done = dags_test(env, "genesys_llm_demo", "2026-11-22")
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    token = httpx.post(
        f"{emulator.base_url}/oauth/token", auth=("id", "secret"), data={"grant_type": "client_credentials"}
    )
    vector = httpx.post(
        f"{emulator.base_url}/api/v2/ai/llm/gateway/embeddings",
        json={"model": "genesys-embed-v1", "input": [QUERY]},
        headers={"Authorization": f"Bearer {token.json()['access_token']}"},
    ).json()["data"][0]["embedding"]
    with PgVectorStore(
        lambda: psycopg.connect(pg_server.conninfo), table="transcript_insights", dimension=384, index="none"
    ) as store:
        matches = store.similarity_search(vector, k=30, filters={"dag_id": "genesys_llm_demo"})
    answers = [json.loads(match.content or "{}") for match in matches]
    assert len(matches) == 30 and [m.distance for m in matches] == sorted(m.distance for m in matches)
    assert answers[0]["intent"] == "refund_request" and "refund" in answers[0]["summary"]
    first_other = next(i for i, a in enumerate(answers) if a["intent"] != "refund_request")
    assert all(a["intent"] == "refund_request" for a in answers[:first_other])
    assert matches[first_other].distance - matches[0].distance > 0.1  # a clear margin, not a tie

    searched = dags_test(env, "genesys_semantic_search", "2026-11-22")
    assert searched.returncode == 0, (searched.stdout + searched.stderr)[-4000:]
    with sqlite3.connect(Path(airflow_home, "airflow.db")) as db:
        [(value,)] = db.execute(
            "SELECT value FROM xcom WHERE dag_id = 'genesys_semantic_search' AND task_id = 'search'"
        )
    found = json.loads(value)
    assert len(found) == 5 and found[0]["intent"] == "refund_request" and "refund" in found[0]["summary"]
    assert [m["cosine_distance"] for m in found] == sorted(m["cosine_distance"] for m in found)


async def test_openai_compatible_embedder_example_works_against_the_emulator(emulator, monkeypatch) -> None:
    """The documented example embedder, against the emulator's embeddings route (the OpenAI body
    shape: ``{"model", "input"}`` in, ``{"data": [{"index", "embedding"}]}`` out)."""
    monkeypatch.syspath_prepend(str(ROOT / "dags_examples"))
    from _openai_embedder import EmbeddingsError, OpenAIEmbedder

    async with httpx.AsyncClient(base_url=emulator.base_url) as http:
        token = (
            await http.post("/oauth/token", auth=("id", "secret"), data={"grant_type": "client_credentials"})
        ).json()
    monkeypatch.setenv("EMULATOR_EMBEDDINGS_KEY", token["access_token"])
    texts = [f"customer {n} wants a refund" for n in range(5)]
    embedder = OpenAIEmbedder(
        f"{emulator.base_url}/api/v2/ai/llm/gateway",
        "genesys-embed-v1",
        api_key_env="EMULATOR_EMBEDDINGS_KEY",
        batch_size=2,
    )
    try:
        assert await embedder(texts) == [embed(text, 384) for text in texts]
        assert emulator.counters()["embeddings"] == 3 and emulator.counters()["embedding_inputs"] == 5
        wrong = OpenAIEmbedder(
            f"{emulator.base_url}/api/v2/ai/llm/gateway", "no-such-model", api_key_env="EMULATOR_EMBEDDINGS_KEY"
        )
        with pytest.raises(EmbeddingsError, match="answered 400 for 1 text") as refused:
            await wrong(["my card is 4111 1111 1111 1111"])
        assert "4111" not in str(refused.value)
        await wrong.aclose()
        monkeypatch.delenv("EMULATOR_EMBEDDINGS_KEY")
        with pytest.raises(EmbeddingsError, match="EMULATOR_EMBEDDINGS_KEY"):
            await OpenAIEmbedder(emulator.base_url, "m", api_key_env="EMULATOR_EMBEDDINGS_KEY")(["x"])
    finally:
        await embedder.aclose()
