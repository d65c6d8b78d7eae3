"""Auth limits that cannot be turned against a user, the trusted-proxy
setting they depend on, and playback links that point where the viewer
came from; on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control_api.config import ApiConfig
from control_api.errors import ApiConfigError
from control_api.forwarded import client_address, networks
from control_api.ratelimit import AuthLimits
from tests.control_api.conftest import PASSWORD, Api, api_with


async def login_from(api: Api, address: str | None, password: str, username: str = "victim") -> int:
    headers = {"X-Forwarded-For": address} if address else {}
    status, _ = await api.call("POST", "/auth/login", json={"username": username, "password": password},
                               headers=headers)
    return status


async def test_wrong_passwords_do_not_lock_the_user_out_elsewhere(api_config: ApiConfig) -> None:
    async with api_with(api_config, auth_rate_per_minute_per_ip=1000, auth_failures_per_user_address=3,
                        auth_failures_per_user=5, trusted_proxies=("127.0.0.1/32",)) as api:
        await api.register("victim")
        attacker, owner, third = "203.0.113.7", "198.51.100.20", "192.0.2.99"
        assert [await login_from(api, attacker, "wrong guess") for _ in range(3)] == [401, 401, 401]
        # The attacker's address now waits, even with the right password ...
        assert await login_from(api, attacker, "wrong guess") == 429
        assert await login_from(api, attacker, PASSWORD) == 429
        # ... while the owner, from anywhere else, logs in as usual.
        assert await login_from(api, owner, PASSWORD) == 200
        assert await login_from(api, owner, PASSWORD) == 200
        # Successes cost nothing; failures from many addresses meet the per-user ceiling.
        assert [await login_from(api, owner, "mistyped!") for _ in range(2)] == [401, 401]
        assert await login_from(api, third, "wrong guess") == 429
        status, problem = await api.call("POST", "/auth/login", json={"username": "victim", "password": "wrong guess"},
                                         headers={"X-Forwarded-For": "192.0.2.100"})
        assert status == 429 and problem["retry_after"] >= 1 and "this user" in problem["detail"]
        # Other users are untouched.
        await api.register("bystander")
        assert await login_from(api, attacker, PASSWORD, "bystander") == 200


async def test_wrong_totp_codes_count_as_failures(api_config: ApiConfig) -> None:
    import pyotp

    async with api_with(api_config, auth_rate_per_minute_per_ip=1000, auth_failures_per_user_address=2,
                        auth_failures_per_user=100, trusted_proxies=("127.0.0.1",)) as api:
        user = await api.register("victim")
        _, setup = await api.call("POST", "/auth/2fa/enable", user, expect=200)
        totp = pyotp.TOTP(setup["secret"])
        await api.call("POST", "/auth/2fa/verify", user, json={"code": totp.now()}, expect=200)
        near = {totp.at(time.time() + d) for d in (-60, -30, 0, 30, 60)}
        wrong = next(c for c in ("000000", "111111", "222222") if c not in near)
        body = {"username": "victim", "password": PASSWORD, "otp": wrong}
        guesser = {"X-Forwarded-For": "203.0.113.9"}
        statuses = [(await api.call("POST", "/auth/login", json=body, headers=guesser))[0] for _ in range(3)]
        assert statuses == [401, 401, 429]
        body["otp"] = totp.at(time.time() + 30)
        status, _ = await api.call("POST", "/auth/login", json=body, headers={"X-Forwarded-For": "198.51.100.1"})
        assert status == 200


async def test_forwarded_headers_only_from_trusted_proxies(api_config: ApiConfig) -> None:
    # No proxy is trusted: a forged X-Forwarded-For is no fresh address.
    async with api_with(api_config, auth_rate_per_minute_per_ip=1000, auth_failures_per_user_address=2) as api:
        await api.register("victim")
        statuses = [await login_from(api, f"10.0.0.{i}", "wrong guess") for i in range(3)]
        assert statuses == [401, 401, 429]
    # A proxy elsewhere is trusted, not the loopback peer: still ignored.
    async with api_with(api_config, auth_rate_per_minute_per_ip=2, trusted_proxies=("10.9.0.0/16",)) as api:
        statuses = [await login_from(api, f"10.0.0.{i}", "wrong guess", "nobody") for i in range(3)]
        assert statuses == [401, 401, 429]
    # The loopback proxy is trusted: each forwarded client has its own address bucket.
    async with api_with(api_config, auth_rate_per_minute_per_ip=2, trusted_proxies=("127.0.0.0/8", "::1")) as api:
        statuses = [await login_from(api, f"10.0.0.{i}", "wrong guess", "nobody") for i in range(4)]
        assert statuses == [401, 401, 401, 401]
        statuses = [await login_from(api, "10.0.0.200, 10.0.0.1", "wrong guess", "nobody") for i in range(3)]
        assert statuses == [401, 429, 429]  # the same client as 10.0.0.1 above


async def test_playback_link_follows_the_request(api_config: ApiConfig) -> None:
    async with api_with(api_config, public_base_url=None, trusted_proxies=("127.0.0.1",)) as api:
        creator = await api.register("linker", "creator")
        _, stream = await api.call("POST", "/streaming/start", creator, json={"title": "linked"}, expect=201)
        fan = await api.register("link_fan")
        path = f"/streaming/{stream['id']}/join"
        _, joined = await api.call("POST", path, fan, expect=200)
        url = urlsplit(joined["playback_url"])
        assert (url.scheme, url.hostname, url.port) == ("http", "127.0.0.1", api.client.port)
        assert url.path == f"/hls/{stream['playback_id']}/index.m3u8"
        _, joined = await api.call("POST", path, fan, expect=200, headers={
            "X-Forwarded-Proto": "https", "X-Forwarded-Host": "media.example.com:8443"})
        assert joined["playback_url"].startswith(f"https://media.example.com:8443/hls/{stream['playback_id']}/")
        for host in ("evil.example/x?", "a b", "exa mple.com:1"):
            # A forwarded host that is not host[:port] is not believed.
            _, joined = await api.call("POST", path, fan, expect=200, headers={"X-Forwarded-Host": host})
            assert urlsplit(joined["playback_url"]).hostname == "127.0.0.1"
    async with api_with(api_config, public_base_url=None) as api:
        creator = await api.register("linker2", "creator")
        _, stream = await api.call("POST", "/streaming/start", creator, json={"title": "linked"}, expect=201)
        fan = await api.register("link_fan2")
        # Without a trusted proxy the forwarded origin is ignored.
        _, joined = await api.call("POST", f"/streaming/{stream['id']}/join", fan, expect=200, headers={
            "X-Forwarded-Proto": "https", "X-Forwarded-Host": "phish.example.com"})
        assert joined["playback_url"].startswith(f"http://127.0.0.1:{api.client.port}/hls/")
    # A configured base still wins.
    async with api_with(api_config, public_base_url="https://cdn.example.net/", trusted_proxies=("127.0.0.1",)) as api:
        creator = await api.register("linker3", "creator")
        _, stream = await api.call("POST", "/streaming/start", creator, json={"title": "linked"}, expect=201)
        fan = await api.register("link_fan3")
        _, joined = await api.call("POST", f"/streaming/{stream['id']}/join", fan, expect=200,
                                   headers={"X-Forwarded-Host": "other.example.com"})
        assert joined["playback_url"].startswith(f"https://cdn.example.net/hls/{stream['playback_id']}/index.m3u8?")


def test_trusted_proxies_config() -> None:
    ApiConfig(trusted_proxies=("10.0.0.0/8", "::1", "192.168.1.1")).check()
    for bad in ("10.0.0.0/33", "proxy.local", ""):
        with pytest.raises(ApiConfigError):
            ApiConfig(trusted_proxies=(bad,)).check()
    from engine.app.config import load_config

    env = load_config(None, env={"FANZ_API_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1"}).api
    assert env.trusted_proxies == ("10.0.0.0/8", "127.0.0.1") and env.public_base_url is None


def test_client_address_walk() -> None:
    trusted = networks(["10.0.0.0/8"])
    assert client_address("203.0.113.1", ["1.2.3.4"], trusted) == "203.0.113.1"
    assert client_address("10.0.0.1", ["1.2.3.4"], trusted) == "1.2.3.4"
    assert client_address("10.0.0.1", ["6.6.6.6, 1.2.3.4, 10.0.0.2"], trusted) == "1.2.3.4"
    assert client_address("10.0.0.1", ["6.6.6.6", "1.2.3.4"], trusted) == "1.2.3.4"
    assert client_address("10.0.0.1", ["1.2.3.4, junk"], trusted) == "10.0.0.1"
    assert client_address("10.0.0.1", [], trusted) == "10.0.0.1"
    assert client_address("10.0.0.1", ["[2001:db8::1]:443"], trusted) == "2001:db8::1"


@given(st.lists(st.text(max_size=30), max_size=4), st.sampled_from(["10.1.2.3", "203.0.113.5", "", "junk"]))
@settings(max_examples=300, deadline=None)
def test_client_address_hostile(values: list[str], peer: str) -> None:
    trusted = networks(["10.0.0.0/8"])
    got = client_address(peer, values, trusted)
    if peer != "10.1.2.3":
        assert got == peer  # an untrusted peer's headers are never read
    else:
        assert got == peer or got in ",".join(values)


def test_auth_limits_refill() -> None:
    limits = AuthLimits(per_minute_per_address=100, failures_per_pair=2, failures_per_user=3)
    assert limits.before("a", "u", 0)[0] == 0
    limits.failed("a", "u", 0)
    limits.failed("a", "u", 0)
    assert limits.before("a", "u", 1)[0] > 0 and limits.before("b", "u", 1)[0] == 0
    limits.failed("b", "u", 1)
    assert limits.before("c", "u", 2)[0] > 0
    assert limits.before("c", "u", 2 + 3600)[0] == 0  # refilled within the hour
