"""Connection settings: regions, URLs and their safety checks."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from airflow_provider_genesys_llm.client import GatewayConfig, resolve_region


@pytest.mark.parametrize(
    ("region", "api", "login", "stream"),
    [
        ("mypurecloud.ie", "https://api.mypurecloud.ie", "https://login.mypurecloud.ie", "wss://api.mypurecloud.ie"),
        ("us_west_2", "https://api.usw2.pure.cloud", "https://login.usw2.pure.cloud", "wss://api.usw2.pure.cloud"),
        (
            "newregion.pure.cloud",
            "https://api.newregion.pure.cloud",
            "https://login.newregion.pure.cloud",
            "wss://api.newregion.pure.cloud",
        ),
    ],
)
def test_region_gives_api_login_and_stream_hosts(region, api, login, stream):
    config = GatewayConfig(client_id="id", client_secret="s", region=region)
    assert (config.api_url, config.login_url, config.stream_url) == (api, login, stream)


def test_explicit_urls_win_over_region():
    config = GatewayConfig(
        client_id="id", client_secret="s", region="mypurecloud.com", login_base_url="https://api.mypurecloud.com"
    )
    assert config.login_url == "https://api.mypurecloud.com"
    assert config.api_url == "https://api.mypurecloud.com"


@pytest.mark.parametrize("bad", ["not a domain", "us_middle_9", "http://"])
def test_malformed_region_is_refused_with_the_known_keys(bad):
    with pytest.raises(ValueError, match="SDK region key"):
        resolve_region(bad)


def test_plain_http_only_for_loopback_and_no_opt_out():
    with pytest.raises(ValidationError, match="api_base_url .* non-loopback host 'gateway.internal'; use https://"):
        GatewayConfig(
            client_id="id", client_secret="s", region="mypurecloud.com", api_base_url="http://gateway.internal"
        )
    with pytest.raises(ValidationError, match="allow_insecure_http"):  # the old opt-out is gone, and says so
        GatewayConfig(
            client_id="id",
            client_secret="s",
            region="mypurecloud.com",
            api_base_url="http://gateway.internal",
            allow_insecure_http=True,
        )
    config = GatewayConfig(
        client_id="id",
        client_secret="s",
        api_base_url="http://127.0.0.1:8099/",
        login_base_url="http://localhost:8099",
        stream_base_url="ws://[::1]:8099",
    )
    assert (config.api_url, config.login_url, config.stream_url) == (
        "http://127.0.0.1:8099",
        "http://localhost:8099",
        "ws://[::1]:8099",
    )


def test_missing_region_and_urls_names_both_fixes():
    with pytest.raises(ValidationError, match="'region' or 'api_base_url'"):
        GatewayConfig(client_id="id", client_secret="s")


def test_secret_never_appears_in_validation_errors_or_repr():
    with pytest.raises(ValidationError) as caught:
        GatewayConfig(client_id="id", client_secret="hunter2-secret", region="mypurecloud.com", max_concurrency=0)
    assert "hunter2-secret" not in str(caught.value)
    config = GatewayConfig(client_id="id", client_secret="hunter2-secret", region="mypurecloud.com")
    assert "hunter2-secret" not in repr(config)


def test_scopes_accept_a_space_separated_string_or_a_list():
    assert GatewayConfig(client_id="i", client_secret="s", region="mypurecloud.com", scopes="a b").scopes == ("a", "b")
    assert GatewayConfig(client_id="i", client_secret="s", region="mypurecloud.com", scopes=["a"]).scopes == ("a",)
