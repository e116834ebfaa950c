"""URL rules: paths are paths, only https/wss (plain on loopback), the secret stays on the login host,
transcript downloads come from the region's domain or an allowed host."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from test_client import USER, make_config

from airflow_provider_genesys_llm.client import (
    DownloadUrlRefusedError,
    GatewayClient,
    GatewayConfig,
    GatewayError,
    GatewayProtocolError,
)
from airflow_provider_genesys_llm.client.auth import TOKEN_CACHE
from airflow_provider_genesys_llm.client.transcripts import TranscriptSource
from airflow_provider_genesys_llm.client.urls import download_url_problem
from genesys_llm_emulator import EmulatorServer

REGION = dict(client_id="id", client_secret="s", region="mypurecloud.com")


@pytest.fixture(autouse=True)
def cold_token_cache():
    TOKEN_CACHE.clear()
    yield
    TOKEN_CACHE.clear()


@pytest.mark.parametrize(
    "path",
    [
        "@evil.example/oauth/token",
        ".evil.example/oauth/token",
        "//evil.example/oauth/token",
        "https://evil.example/oauth/token",
        "oauth/token",
        "/oauth/../../token",
        "/oauth/./token",
        "/oauth//token",
        "/oauth\\token",
        "/oauth/token?redirect=https://evil.example",
        "/oauth/token#x",
        "/oauth/%2e%2e/token",
        "/oauth/to ken",
        "/oauth/token\x00",
        "/oauth/token\n",
        "/a@evil.example/token",
        "",
    ],
)
def test_paths_extra_takes_paths_only(path):
    with pytest.raises(ValidationError, match=r"paths\.token") as caught:
        GatewayConfig(**REGION, paths={"token": path})
    assert "client_secret" not in str(caught.value)


@pytest.mark.parametrize(
    "path", ["/oauth/token", "/api/v2/ai/llm/gateway/completions:stream", "/v1/chat/", "/a-b_c.d~e"]
)
def test_ordinary_paths_pass(path):
    config = GatewayConfig(**REGION, paths={"status": path})
    assert config.api_url + path == f"https://api.mypurecloud.com{path}"


@pytest.mark.parametrize("field", ["api_base_url", "login_base_url", "stream_base_url", "analytics_webhook_url"])
@pytest.mark.parametrize(
    "url", ["ftp://files.example/x", "file:///etc/passwd", "gopher://x", "javascript:alert(1)", "example.com"]
)
def test_other_schemes_are_refused_naming_the_field(field, url):
    with pytest.raises(ValidationError, match=field):
        GatewayConfig(**REGION, **{field: url})


@pytest.mark.parametrize(
    ("field", "url", "problem"),
    [
        ("api_base_url", "http://gateway.internal", "non-loopback"),
        ("api_base_url", "http://127.0.0.1.evil.example", "non-loopback"),
        ("api_base_url", "http://localhost.evil.example", "non-loopback"),
        ("stream_base_url", "ws://10.0.0.5", "non-loopback"),
        ("api_base_url", "wss://api.mypurecloud.com", "https"),
        ("stream_base_url", "https://api.mypurecloud.com", "wss"),
        ("login_base_url", "https://user:pw@login.mypurecloud.com", "user info"),
        ("login_base_url", "https://login.mypurecloud.com@evil.example", "user info"),
        ("login_base_url", "https://login.mypurecloud.com?next=x", "query"),
        ("login_base_url", "https://login.mypurecloud.com/a/../b", "'..'"),
        ("login_base_url", "https://login.mypurecloud.com\\@evil.example", "backslash"),
        ("login_base_url", "https:///nohost", "no host"),
        ("login_base_url", "https://login.mypurecloud.com:99999", "not a valid URL"),
    ],
)
def test_unsafe_base_urls_are_refused(field, url, problem):
    with pytest.raises(ValidationError, match=problem):
        GatewayConfig(**REGION, **{field: url})


@pytest.mark.parametrize(
    "url",
    [
        "http://user:hunter2@gateway.internal",
        "https://user:hunter2@login.mypurecloud.com:99999",
        "ftp://user:hunter2@x",
        "https://user:hunter2@",
    ],
)
def test_base_url_errors_never_echo_credentials(url):
    with pytest.raises(ValidationError) as caught:
        GatewayConfig(**REGION, login_base_url=url)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8099", "http://localhost", "http://[::1]:80", "https://proxy.example/genesys"]
)
def test_loopback_plain_http_and_https_with_a_path_prefix_pass(url):
    assert GatewayConfig(**REGION, api_base_url=url).api_url == url


async def test_secret_is_not_sent_along_a_login_redirect(emulator):
    with EmulatorServer() as evil:
        emulator.add_fault(
            endpoint="oauth", kind="http_error", status=307, headers={"Location": evil.base_url + "/oauth/token"}
        )
        async with GatewayClient(make_config(emulator)) as client:
            with pytest.raises(GatewayError) as caught:
                await client.complete(client.request(messages=USER, transport="sse"))
            assert caught.value.status_code == 307
        assert evil.counters()["total"] == 0
    assert emulator.counters()["oauth"] == 1


async def test_api_redirects_are_not_followed(emulator):
    with EmulatorServer() as evil:
        emulator.add_fault(
            endpoint="status", kind="http_error", status=302, headers={"Location": evil.base_url + "/api/v2/x"}
        )
        async with GatewayClient(make_config(emulator)) as client:
            with pytest.raises(GatewayError):
                await client.status()
        assert evil.counters()["total"] == 0


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://files.mypurecloud.com/t/abc?X-Amz-Signature=1", True),
        ("https://mypurecloud.com/t", True),
        ("https://prod-transcripts.s3.amazonaws.com/t?sig=1", True),
        ("https://evil.example/t", False),
        ("https://mypurecloud.com.evil.example/t", False),
        ("https://evilmypurecloud.com/t", False),
        ("http://files.mypurecloud.com/t", False),
        ("ftp://files.mypurecloud.com/t", False),
        ("https://files.mypurecloud.com@evil.example/t", False),
        ("https://evil.example\\@files.mypurecloud.com/t", False),
        ("http://127.0.0.1:8099/_transcripts/x", False),
        ("https://files.mypurecloud.com:notaport/t", False),
    ],
)
def test_download_urls_on_the_region_or_allow_list_only(url, allowed):
    assert (download_url_problem(url, ("mypurecloud.com", "s3.amazonaws.com"), loopback_ok=False) is None) is allowed


def test_loopback_downloads_only_when_the_api_is_on_loopback():
    url = "http://127.0.0.1:8099/_transcripts/x"
    assert download_url_problem(url, (), loopback_ok=True) is None
    assert download_url_problem("ftp://127.0.0.1/x", (), loopback_ok=True) is not None
    assert download_url_problem(url, (), loopback_ok=False) is not None


async def test_transcript_source_refuses_a_foreign_url_without_echoing_it():
    config = GatewayConfig(**REGION, transcript_url_hosts="s3.amazonaws.com, storage.example")
    assert config.transcript_url_hosts == ("s3.amazonaws.com", "storage.example")
    async with GatewayClient(config) as client:
        source = TranscriptSource(client)
        source._check_download_url("https://x.storage.example/t?sig=secret-signature", "download")
        with pytest.raises(DownloadUrlRefusedError, match="evil.example") as caught:
            source._check_download_url("https://evil.example/t?sig=secret-signature", "download")
    assert "secret-signature" not in str(caught.value)
    assert "transcript_url_hosts" in str(caught.value)
    assert isinstance(caught.value, GatewayProtocolError) and not caught.value.transient


def test_transcript_url_hosts_must_be_host_names():
    with pytest.raises(ValidationError, match="transcript_url_hosts"):
        GatewayConfig(**REGION, transcript_url_hosts=["https://evil.example/"])
