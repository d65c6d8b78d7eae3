"""A stream record's geographic rule over the API, on SQLite and
PostgreSQL: set by the stream's creator or an admin, validated, published
in the OpenAPI document; what the playback check makes of it is in
test_geo_playback.py."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.geo import COUNTRY_CODES
from tests.control_api.conftest import Api

CODES = sorted(COUNTRY_CODES)
VALID_RULES = st.fixed_dictionaries({
    "mode": st.sampled_from(["allow", "block"]), "countries": st.lists(st.sampled_from(CODES), min_size=1, max_size=4),
})
WILD_RULES = st.fixed_dictionaries({
    "mode": st.sampled_from(["allow", "block", "deny", "", "ALLOW"]),
    "countries": st.lists(st.sampled_from(CODES) | st.sampled_from(["ZZ", "de", "UK", "DEU", "", "EU"])
                          | st.integers(0, 99), max_size=4),
})
RULE_CASES = VALID_RULES | WILD_RULES


async def test_creator_and_admin_set_the_rule(api: Api) -> None:
    creator = await api.register("geo_creator", "creator")
    other = await api.register("geo_other", "creator")
    fan = await api.register("geo_fan")
    admin = await api.admin()
    _, stream = await api.call("POST", "/streaming/start", creator,
                               json={"title": "t", "geo": {"mode": "block", "countries": ["FR", "BE", "FR"]}},
                               expect=201)
    assert stream["geo"] == {"mode": "block", "countries": ["BE", "FR"]}
    path = f"/streaming/{stream['id']}/geo"
    _, changed = await api.call("PUT", path, creator, json={"geo": {"mode": "allow", "countries": ["DE"]}}, expect=200)
    assert changed["geo"] == {"mode": "allow", "countries": ["DE"]}
    for user in (other, fan):
        await api.call("PUT", path, user, json={"geo": None}, expect=403)
    await api.call("PUT", path, None, json={"geo": None}, expect=401)
    _, by_admin = await api.call("PUT", path, admin, json={"geo": {"mode": "block", "countries": ["XK"]}}, expect=200)
    assert by_admin["geo"] == {"mode": "block", "countries": ["XK"]}
    _, seen = await api.call("GET", f"/streaming/{stream['id']}", expect=200)
    assert seen["geo"] == by_admin["geo"]
    _, cleared = await api.call("PUT", path, creator, json={"geo": None}, expect=200)
    assert cleared["geo"] is None
    # A start without "geo" keeps the stream's rule; the rule follows other changes untouched.
    await api.call("PUT", path, creator, json={"geo": {"mode": "allow", "countries": ["JP"]}}, expect=200)
    _, again = await api.call("POST", "/streaming/start", creator, json={"title": "renamed"}, expect=200)
    assert again["geo"] == {"mode": "allow", "countries": ["JP"]}
    await api.call("PUT", "/streaming/nosuchstream/geo", creator, json={"geo": None}, expect=404)
    await api.call("POST", "/streaming/stop", creator, expect=200)
    status, problem = await api.call("PUT", path, creator, json={"geo": None})
    assert status == 409 and problem["type"] == "/problems/stream-ended"


async def test_bad_rules_are_refused(api: Api) -> None:
    creator = await api.register("geo_validator", "creator")
    _, stream = await api.call("POST", "/streaming/start", creator, json={"title": "t"}, expect=201)
    assert stream["geo"] is None
    path = f"/streaming/{stream['id']}/geo"
    for bad in ({"mode": "allow", "countries": []}, {"mode": "allow", "countries": ["ZZ"]},
                {"mode": "allow", "countries": ["de"]}, {"mode": "deny", "countries": ["DE"]},
                {"mode": "allow"}, {"mode": "allow", "countries": ["DE"], "more": True},
                {"mode": "allow", "countries": ["DE"] * 251}, "DE", ["DE"]):
        status, problem = await api.call("PUT", path, creator, json={"geo": bad})
        assert status == 422, (bad, problem)
        status, _ = await api.call("POST", "/streaming/start", creator, json={"title": "t", "geo": bad})
        assert status == 422, bad
    await api.call("PUT", path, creator, json={}, expect=422)
    _, unchanged = await api.call("GET", f"/streaming/{stream['id']}", expect=200)
    assert unchanged["geo"] is None

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(RULE_CASES)
    def check(rule: dict[str, Any]) -> None:
        valid = (rule["mode"] in ("allow", "block") and bool(rule["countries"])
                 and all(isinstance(c, str) and c in COUNTRY_CODES for c in rule["countries"]))
        results.append((rule, valid))

    results: list[tuple[dict[str, Any], bool]] = [({"mode": "block", "countries": ["GB", "GB"]}, True),
                                                  ({"mode": "block", "countries": ["GB", "UK"]}, False)]
    check()
    for rule, valid in results:
        status, body = await api.call("PUT", path, creator, json={"geo": rule})
        assert status == (200 if valid else 422), (rule, body)
        if valid:
            assert body["geo"] == {"mode": rule["mode"], "countries": sorted(set(rule["countries"]))}
    assert any(v for _, v in results) and not all(v for _, v in results)


async def test_the_openapi_document_describes_the_rule(api: Api) -> None:
    _, doc = await api.call("GET", "/openapi.json", expect=200)
    put = doc["paths"]["/streaming/{stream_id}/geo"]["put"]
    assert {"200", "403", "409", "422"} <= set(put["responses"])
    assert "451" in doc["paths"]["/streaming/{stream_id}/join"]["post"]["responses"]
    stream = doc["components"]["schemas"]["LiveStream"]
    assert "geo" in stream["properties"] and "geo" in stream["required"]
