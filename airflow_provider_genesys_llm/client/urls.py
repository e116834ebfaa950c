"""Which URLs the client may talk to.

Every URL the client uses is a base URL from the connection joined with a path, or a transcript
download URL handed out by the gateway. Both are attacker-shaped inputs: a path of
``@evil.example/x`` turns ``https://login.mypurecloud.com`` into a request to ``evil.example``
carrying the client secret, and a download URL can point anywhere. The rules:

- base URLs: ``https``/``wss`` (``http``/``ws`` only on a loopback host), a host, no user info,
  query or fragment, and a path (if any) that passes the path rules;
- paths: ``/segment/segment``, made of unreserved characters only: no scheme, host, ``@``,
  ``.``/``..`` segment, ``//``, backslash, ``%``, control character, query or fragment;
- download URLs: ``https`` on a host under the region's domain or in ``transcript_url_hosts``;
  a loopback host only when the API itself is on loopback (the emulator).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

#: A path segment: RFC 3986 unreserved characters plus ``:``.
_SEGMENT = re.compile(r"[A-Za-z0-9._~:-]+")
#: Characters no URL the client uses may contain, anywhere (parsers disagree about them).
_FORBIDDEN = re.compile(r"[\x00-\x20\x7f\\]")
SECURE_SCHEMES = {"http": "https", "ws": "wss", "https": "https", "wss": "wss"}


def is_loopback(host: str | None) -> bool:
    """``localhost`` or a loopback IP address (``127.0.0.0/8``, ``::1``)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def path_problem(path: str) -> str | None:
    """Why ``path`` is not a plain absolute path, or None when it is one."""
    if _FORBIDDEN.search(path):
        return "contains a control character, space or backslash"
    if not path.startswith("/"):
        return "must start with '/' (a path, not a URL or host)"
    segments = path[1:].split("/")
    if path != "/" and segments[-1] == "":
        segments.pop()  # one trailing slash is fine
    for segment in segments:
        if segment in ("", ".", ".."):
            return "contains an empty, '.' or '..' segment"
        if not _SEGMENT.fullmatch(segment):
            return "may only contain letters, digits and . _ ~ : - between slashes (no @ ? # % or scheme)"
    return None


def check_path(field: str, path: str) -> str:
    """``path`` unchanged, or ValueError naming ``field`` and the rule it breaks."""
    problem = path_problem(path)
    if problem:
        raise ValueError(f"{field} {path!r} {problem}")
    return path


def check_base_url(field: str, url: str, schemes: Iterable[str]) -> str:
    """``url`` without a trailing slash, or ValueError naming ``field`` and the fix.

    ``schemes`` are the secure schemes the field takes (``https`` or ``wss``); their plain
    variants are accepted on loopback hosts only. Messages name the host at most, never the URL
    (it may carry credentials).
    """
    allowed = set(schemes)
    if _FORBIDDEN.search(url):
        raise ValueError(f"{field} contains a control character, space or backslash")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"{field} is not a valid URL") from None
    if "@" in parts.netloc:
        raise ValueError(f"{field} must not carry user info ('@' in the host part)")
    scheme = parts.scheme.lower()
    if SECURE_SCHEMES.get(scheme) not in allowed:
        raise ValueError(f"{field} must be a {' or '.join(sorted(allowed))} URL, got scheme {scheme[:10]!r}")
    if not parts.hostname:
        raise ValueError(f"{field} has no host")
    if scheme not in allowed and not is_loopback(parts.hostname):
        raise ValueError(
            f"{field} is plain {scheme}:// on the non-loopback host {parts.hostname!r}; use "
            f"{SECURE_SCHEMES[scheme]}:// (plain http/ws is accepted only on localhost/127.0.0.1/::1)"
        )
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ValueError(f"{field} must not carry a query or fragment")
    if parts.path not in ("", "/"):
        check_path(f"{field} path", parts.path)
    return url.rstrip("/")


def host_allowed(host: str, domains: Iterable[str]) -> bool:
    """``host`` is one of ``domains`` or a subdomain of one (``a.b.example`` under ``example``)."""
    host = host.lower().rstrip(".")
    return any(host == domain or host.endswith("." + domain) for domain in domains)


def download_url_problem(url: str, domains: Iterable[str], *, loopback_ok: bool) -> str | None:
    """Why the client refuses to fetch ``url``, or None. The text names the host, never the URL
    (a pre-signed URL is a credential)."""
    if _FORBIDDEN.search(url):
        return "contains a control character, space or backslash"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018
    except ValueError:
        return "is not a valid URL"
    host = parts.hostname or ""
    if "@" in parts.netloc:
        return "carries user info"
    if loopback_ok and is_loopback(host) and parts.scheme in ("http", "https"):
        return None
    if parts.scheme != "https":
        return f"is not https (scheme {parts.scheme[:10]!r})"
    if not host_allowed(host, domains):
        return f"is on host {host[:100]!r}, which is neither under the region's domain nor in transcript_url_hosts"
    return None
