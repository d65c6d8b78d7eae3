"""Geographic restrictions: a stream's country rule and the lookup that
maps a viewer's address to a country.

The engine defines the interface (:class:`GeoLookup`, a blocking call that
may read a database file) and the rule (:class:`GeoRule`); the playback
check that knows each stream's rule (the control API's) applies them and
raises :class:`engine.errors.GeoBlocked`, which every HTTP layer answers
with 451. :class:`CountryCache` runs the lookup off the event loop once per
address: a player asks for a segment every second or so, and each of those
requests costs a dictionary hit, not a database search.

The wheel-backed lookup is :mod:`engine.app.geodb`. The address handed in is
the one the HTTP layer believes (``X-Forwarded-For`` only from trusted
proxies; see :mod:`control_api.forwarded`).
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from engine.errors import EngineError

COUNTRY_CODES: frozenset[str] = frozenset(
    """AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV
    BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET
    FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM
    IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD
    ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE
    PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST
    SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS
    XK YE YT ZA ZM ZW""".split()
)
"""The country codes a rule may name: the 249 ISO 3166-1 alpha-2 codes
assigned to countries and territories, and ``XK`` (Kosovo, a user-assigned
code that address registries and the bundled database use)."""

MAX_CACHED_ADDRESSES = 100_000

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class GeoRuleError(EngineError, ValueError):
    """A geographic rule names an unknown mode or country code."""


class GeoMode(enum.StrEnum):
    ALLOW = "allow"
    """Only viewers in the listed countries may watch."""
    BLOCK = "block"
    """Viewers in the listed countries may not watch; everyone else may."""


@dataclass(frozen=True, slots=True)
class GeoRule:
    """A stream's (or a VOD asset's) country rule: ``allow`` the listed
    countries only, or ``block`` them. A viewer whose address maps to no
    country (a private or unlisted address) is outside every list: refused
    by an allow rule, let through by a block rule."""

    mode: GeoMode
    countries: frozenset[str]

    def __post_init__(self) -> None:
        if not isinstance(self.mode, GeoMode):
            raise GeoRuleError(f"geo mode must be allow or block, not {self.mode!r}")
        if not self.countries:
            raise GeoRuleError("a geo rule lists at least one country (no rule at all: none)")
        unknown = sorted(c for c in self.countries if not isinstance(c, str) or c not in COUNTRY_CODES)
        if unknown:
            raise GeoRuleError(f"not ISO 3166-1 alpha-2 country codes: {', '.join(map(repr, unknown[:5]))}")

    @classmethod
    def parse(cls, mode: object, countries: Iterable[object]) -> GeoRule:
        """A rule from untrusted values (a stored record, a request body);
        raises :class:`GeoRuleError`."""
        if mode not in (GeoMode.ALLOW.value, GeoMode.BLOCK.value) or not isinstance(mode, str):
            raise GeoRuleError(f"geo mode must be allow or block, not {mode!r}")
        parsed_mode = GeoMode(mode)
        codes = list(countries)
        if not all(isinstance(c, str) for c in codes):
            raise GeoRuleError("country codes are strings")
        return cls(parsed_mode, frozenset(str(c) for c in codes))

    @classmethod
    def from_json(cls, value: Any) -> GeoRule | None:
        """``{"mode": ..., "countries": [...]}`` or ``None`` (no rule)."""
        if value is None:
            return None
        if not isinstance(value, dict) or set(value) != {"mode", "countries"} or not isinstance(
            value["countries"], list
        ):
            raise GeoRuleError('a geo rule is {"mode": "allow"|"block", "countries": [codes]}')
        return cls.parse(value["mode"], value["countries"])

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode.value, "countries": sorted(self.countries)}

    def permits(self, country: str | None) -> bool:
        listed = country is not None and country in self.countries
        return listed if self.mode is GeoMode.ALLOW else not listed


class GeoLookup(Protocol):
    """Maps an address to a country. Blocking (it may read a file): call it
    through :class:`CountryCache`, never on the event loop."""

    def country(self, address: Address) -> str | None:
        """The ISO 3166-1 alpha-2 code of ``address``, or ``None`` when the
        database maps it to no country."""
        ...


def parse_address(text: str) -> Address | None:
    """The address in ``text`` as an HTTP layer reports a peer (an IPv4 or
    IPv6 address, possibly with an IPv6 zone), ``None`` for anything else.
    An IPv4-mapped IPv6 address is its IPv4 address."""
    if not text or len(text) > 64:
        return None
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.scope_id is not None:
            return ipaddress.IPv6Address(address.packed)
    return address


class CountryCache:
    """One database lookup per address, off the event loop; later requests
    from the same address are answered from a bounded LRU table.

    ``lookup`` is ``None`` when no database is installed: every address
    then maps to no country (so allow rules refuse and block rules let
    through)."""

    def __init__(self, lookup: GeoLookup | None, size: int = MAX_CACHED_ADDRESSES) -> None:
        if size < 1:
            raise ValueError("the cache holds at least one address")
        self.lookup = lookup
        self.size = size
        self.lookups = 0
        """Database searches made (for metrics and tests)."""
        self._known: OrderedDict[Address, str | None] = OrderedDict()
        self._pending: dict[Address, asyncio.Future[str | None]] = {}

    async def country(self, remote: str) -> str | None:
        address = parse_address(remote)
        if address is None or self.lookup is None:
            return None
        if address in self._known:
            self._known.move_to_end(address)
            return self._known[address]
        pending = self._pending.get(address)
        if pending is not None:  # a player's first requests often come together
            return await asyncio.shield(pending)
        future = asyncio.get_running_loop().run_in_executor(None, self.lookup.country, address)
        self._pending[address] = future
        try:
            found = await asyncio.shield(future)
        finally:
            self._pending.pop(address, None)
        self.lookups += 1
        self._known[address] = found
        while len(self._known) > self.size:
            self._known.popitem(last=False)
        return found
