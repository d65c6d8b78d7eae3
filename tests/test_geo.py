"""Geographic rules, address parsing, the bundled country database and the
per-address cache, without a server (the served answers are in
tests/control_api/test_geo_playback.py)."""

from __future__ import annotations

import asyncio
import bisect
import ipaddress
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control_api.forwarded import client_address, networks
from engine.app.geodb import GeoDatabaseError, SqliteCountryDatabase
from engine.errors import GeoBlocked, PlaybackDenied
from engine.geo import COUNTRY_CODES, CountryCache, GeoMode, GeoRule, GeoRuleError, parse_address
from tests.geo_data import address_in, database_path

CODES = sorted(COUNTRY_CODES)


# -- rules ---------------------------------------------------------------------------
def test_country_codes_are_the_assigned_ones() -> None:
    assert len(COUNTRY_CODES) == 250  # 249 ISO 3166-1 alpha-2 codes and XK
    assert {"US", "DE", "FR", "GB", "JP", "XK", "AQ"} <= COUNTRY_CODES
    assert not {"UK", "EU", "ZZ", "AA", "us"} & COUNTRY_CODES


def test_allow_and_block_rules() -> None:
    allow = GeoRule(GeoMode.ALLOW, frozenset({"DE", "AT"}))
    block = GeoRule(GeoMode.BLOCK, frozenset({"DE", "AT"}))
    assert allow.permits("DE") and not allow.permits("FR") and not allow.permits(None)
    assert not block.permits("DE") and block.permits("FR") and block.permits(None)
    assert GeoRule.from_json({"mode": "block", "countries": ["AT", "DE"]}) == block
    assert block.to_json() == {"mode": "block", "countries": ["AT", "DE"]}
    assert GeoRule.from_json(None) is None


@pytest.mark.parametrize("value", [
    {"mode": "allow", "countries": []}, {"mode": "deny", "countries": ["DE"]}, {"mode": "allow", "countries": ["de"]},
    {"mode": "allow", "countries": ["ZZ"]}, {"mode": "allow", "countries": ["DEU"]}, {"mode": "allow"},
    {"mode": "allow", "countries": "DE"}, {"mode": "allow", "countries": [1]}, {"mode": ["allow"], "countries": ["DE"]},
    {"mode": "allow", "countries": ["DE"], "extra": 1}, ["allow", ["DE"]], "allow",
])
def test_bad_rules_are_refused(value: Any) -> None:
    with pytest.raises(GeoRuleError):
        GeoRule.from_json(value)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=4) | st.sampled_from(CODES),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=9), inner, max_size=3),
    max_leaves=12,
)


@given(mode=JSONISH | st.sampled_from(["allow", "block"]),
       countries=JSONISH | st.lists(st.sampled_from(CODES) | st.text(max_size=3), max_size=6))
def test_any_rule_value_is_a_rule_or_a_rule_error(mode: Any, countries: Any) -> None:
    value = {"mode": mode, "countries": countries}
    try:
        rule = GeoRule.from_json(value)
    except GeoRuleError:
        valid = (mode in ("allow", "block") and isinstance(countries, list) and countries
                 and all(isinstance(c, str) and c in COUNTRY_CODES for c in countries))
        assert not valid
        return
    assert rule is not None
    assert GeoRule.from_json(rule.to_json()) == rule
    assert rule.mode.value == mode and rule.countries == set(countries)
    for code in CODES[:20]:
        assert rule.permits(code) == ((code in rule.countries) == (rule.mode is GeoMode.ALLOW))


def test_geo_blocked_is_a_playback_refusal_that_names_no_address() -> None:
    exc = GeoBlocked("FR")
    assert isinstance(exc, PlaybackDenied) and exc.country == "FR"
    assert str(exc) == "this stream is not available in your country (FR)"
    assert "unknown" in str(GeoBlocked(None))


# -- addresses ------------------------------------------------------------------------
def test_parse_address() -> None:
    assert parse_address("81.2.69.160") == ipaddress.IPv4Address("81.2.69.160")
    assert parse_address("::ffff:81.2.69.160") == ipaddress.IPv4Address("81.2.69.160")
    assert parse_address("fe80::1%eth0") == ipaddress.IPv6Address("fe80::1")
    assert parse_address(" 2001:db8::1 ") == ipaddress.IPv6Address("2001:db8::1")
    for bad in ("", "unknown", "1.2.3", "1.2.3.4:80", "[::1]", "1.2.3.4, 5.6.7.8", "0x7f.1", "1" * 100):
        assert parse_address(bad) is None, bad


@given(st.text(max_size=80))
def test_parse_address_never_raises(text: str) -> None:
    address = parse_address(text)
    if address is not None:
        assert isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address)


@given(st.ip_addresses())
def test_parse_address_reads_every_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    parsed = parse_address(str(address))
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    assert parsed == (mapped or address)


TRUSTED = networks(["127.0.0.1", "10.0.0.0/8"])
HOP = st.one_of(
    st.ip_addresses().map(str), st.text(max_size=20),
    st.sampled_from(["127.0.0.1", "10.1.2.3", "unknown", "[::1]:80", "1.2.3.4:5", "", " ", ",", "\x00", "%"]),
)
FORWARDED_FOR = st.lists(st.lists(HOP, max_size=5).map(", ".join) | st.text(max_size=60), max_size=3)


@given(FORWARDED_FOR)
def test_hostile_forwarded_for_from_a_trusted_proxy(values: list[str]) -> None:
    """Whatever a client writes into X-Forwarded-For, the result is the
    proxy itself or an address, never an error or the raw text."""
    client = client_address("127.0.0.1", values, TRUSTED)
    hops = [h.strip() for v in values for h in v.split(",") if h.strip()]
    assert client == "127.0.0.1" or parse_address(client) is not None
    # What the nearest proxy appended wins over anything the client wrote left of it.
    if hops and parse_address(hops[-1]) is not None and str(parse_address(hops[-1])) == hops[-1]:
        last = ipaddress.ip_address(hops[-1])
        if not any(last in n for n in TRUSTED):
            assert client == hops[-1]


@given(FORWARDED_FOR, st.ip_addresses().map(str).filter(lambda a: parse_address(a) is not None))
def test_forwarded_for_from_an_untrusted_peer_is_ignored(values: list[str], peer: str) -> None:
    if any(ipaddress.ip_address(peer) in n for n in TRUSTED):
        return
    assert client_address(peer, values, TRUSTED) == peer


# -- the bundled database -------------------------------------------------------------
@pytest.fixture(scope="module")
def geo_db() -> SqliteCountryDatabase:
    return SqliteCountryDatabase(database_path())


class RangeTable:
    """Every v4 range of the database in memory: a reference to check the
    indexed lookup against, by bisection over the sorted starts."""

    def __init__(self, path: Path) -> None:
        db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro&immutable=1", uri=True)
        rows = db.execute("SELECT start, end, cc FROM v4 ORDER BY start").fetchall()
        db.close()
        self.starts = [r[0] for r in rows]
        self.rows = rows

    def country(self, value: int) -> str | None:
        i = bisect.bisect_right(self.starts, value) - 1
        if i < 0 or self.rows[i][1] < value:
            return None
        return str(self.rows[i][2])


@pytest.fixture(scope="module")
def ranges() -> RangeTable:
    return RangeTable(database_path())


def test_database_maps_addresses_to_countries(geo_db: SqliteCountryDatabase) -> None:
    path = database_path()
    for country in ("DE", "FR", "US", "JP", "BR"):
        assert geo_db.country(ipaddress.IPv4Address(address_in(path, country))) == country
        assert geo_db.country(ipaddress.IPv6Address(address_in(path, country, 6))) == country
    for private in ("127.0.0.1", "10.1.2.3", "192.168.1.1", "::1", "fe80::1", "0.0.0.0"):
        assert geo_db.country(ipaddress.ip_address(private)) is None, private


def test_range_edges(geo_db: SqliteCountryDatabase, ranges: RangeTable) -> None:
    for start, end, country in ranges.rows[1000:1003] + ranges.rows[-3:]:
        assert geo_db.country(ipaddress.IPv4Address(start)) == country
        assert geo_db.country(ipaddress.IPv4Address(end)) == country
        if end < 2**32 - 1:
            assert geo_db.country(ipaddress.IPv4Address(end + 1)) == ranges.country(end + 1)


@settings(max_examples=300)
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_lookup_agrees_with_the_ranges(geo_db: SqliteCountryDatabase, ranges: RangeTable, value: int) -> None:
    assert geo_db.country(ipaddress.IPv4Address(value)) == ranges.country(value)


def test_not_a_database(tmp_path: Path) -> None:
    with pytest.raises(GeoDatabaseError):
        SqliteCountryDatabase(tmp_path / "missing.sqlite")
    (tmp_path / "junk.sqlite").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(GeoDatabaseError):
        SqliteCountryDatabase(tmp_path / "junk.sqlite")


# -- the cache ---------------------------------------------------------------------------
class CountingLookup:
    def __init__(self, inner: SqliteCountryDatabase) -> None:
        self.inner = inner
        self.calls: list[str] = []
        self.threads: set[int] = set()

    def country(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        self.calls.append(str(address))
        self.threads.add(threading.get_ident())
        return self.inner.country(address)


async def test_one_lookup_per_address_off_the_loop(geo_db: SqliteCountryDatabase) -> None:
    path = database_path()
    de, fr = address_in(path, "DE"), address_in(path, "FR")
    counting = CountingLookup(geo_db)
    cache = CountryCache(counting, size=2)
    for _ in range(50):  # a viewer's playlists and segments
        assert await cache.country(de) == "DE"
        assert await cache.country(fr) == "FR"
        assert await cache.country("::ffff:" + de) == "DE"
    assert counting.calls == [de, fr] and cache.lookups == 2
    assert threading.get_ident() not in counting.threads
    assert await cache.country("not an address") is None
    assert await cache.country("127.0.0.1") is None
    assert counting.calls == [de, fr, "127.0.0.1"]
    assert await cache.country(de) == "DE"  # used last: still in the two-entry table
    assert await cache.country(fr) == "FR"  # pushed out by 127.0.0.1: looked up again
    assert counting.calls == [de, fr, "127.0.0.1", fr]
    assert await CountryCache(None).country(de) is None


async def test_concurrent_first_requests_share_one_lookup(geo_db: SqliteCountryDatabase) -> None:
    path = database_path()
    jp = address_in(path, "JP")
    counting = CountingLookup(geo_db)
    cache = CountryCache(counting)
    answers = await asyncio.gather(*(cache.country(jp) for _ in range(20)))
    assert answers == ["JP"] * 20 and counting.calls == [jp] and cache.lookups == 1
