"""chatkit.origins: one allow-list for every route."""

from __future__ import annotations

import pytest

from chatkit.origins import OriginPolicy, OriginRefused


@pytest.fixture
def policy():
    p = OriginPolicy.parse(None)
    p.set_ports([8765, 8766])
    return p


@pytest.mark.parametrize(
    "origin",
    [
        None,
        "http://127.0.0.1:8765",
        "http://localhost:8765",
        "http://127.0.0.1:8766",
        "http://localhost:8766",
        "https://127.0.0.1:8765",
        "http://[::1]:8765",
        "HTTP://LOCALHOST:8765/",
    ],
)
def test_own_pages_and_non_browsers_are_allowed(policy, origin):
    assert policy.allows(origin)


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "http://127.0.0.1:9999",
        "http://localhost",
        "null",
        "http://127.0.0.1:8765.evil.example",
        "http://127.0.0.2:8765",
    ],
)
def test_other_origins_are_refused_with_a_code(policy, origin):
    assert not policy.allows(origin)
    with pytest.raises(OriginRefused) as info:
        policy.check(origin)
    assert info.value.code == "origin_not_allowed" and info.value.status == 403


def test_same_origin_through_a_local_proxy_is_allowed_but_not_dns_rebinding(policy):
    # a page on JupyterLab at 127.0.0.1:8888 reaching chatkit through jupyter-server-proxy
    assert policy.allows("http://127.0.0.1:8888", host="127.0.0.1:8888")
    # a rebinding page: same-origin with its Host, but the host is not ours
    assert not policy.allows("http://evil.example:8765", host="evil.example:8765")
    # a page on another port talking to us directly: Host is ours, Origin is not
    assert not policy.allows("http://127.0.0.1:9999", host="127.0.0.1:8765")


def test_self_allows_any_same_origin_host_and_star_allows_all():
    binder = OriginPolicy.parse("self")
    assert binder.allows("https://hub.example.org", host="hub.example.org")
    assert not binder.allows("https://evil.example", host="hub.example.org")
    anything = OriginPolicy.parse("*")
    assert anything.allows("http://evil.example")


def test_extra_origins_and_bind_host():
    p = OriginPolicy.parse("https://course.example.org, http://10.0.0.5:8080", bind_host="10.0.0.5")
    p.set_ports([8765])
    assert p.allows("https://course.example.org")
    assert p.allows("http://10.0.0.5:8080")
    assert p.allows("http://10.0.0.5:8765")
    assert not p.allows("http://10.0.0.6:8765")


def test_cors_echoes_only_allowed_origins(policy):
    assert (
        dict(policy.cors_headers("http://localhost:8765"))["Access-Control-Allow-Origin"]
        == "http://localhost:8765"
    )
    assert "Access-Control-Allow-Origin" not in dict(policy.cors_headers("http://evil.example"))
    assert policy.cors_headers(None) == []
