"""The engine's publish and playback checks, answered from the store.

:class:`StoreChecks` implements :class:`engine.auth.PublishCheck` and
:class:`engine.auth.PlaybackCheck`. Publishing needs an active stream key
whose owner is a creator in good standing and not banned; the grant names
the stream's public playback id (never the key). Playback of a free stream
needs nothing; any other stream needs a playback token from ``join`` that is
signed, unexpired, bound to this stream (or, for a VOD asset, to
``asset:ID``: a recording follows its own or its stream's visibility) and not revoked (see
:mod:`control_api.revocations`: a cancelled or refunded payment, a ban or a
creator's block ends playback at the next request). The stream's visibility
and creator are cached for a few seconds because players ask for every
segment; the revocation check is in memory.

A stream with a geographic rule (free or not) refuses viewers whose address
maps to a country outside it with :class:`engine.errors.GeoBlocked`, which
the HTTP layers answer with 451. The address's country comes from the
plane's :class:`engine.geo.CountryCache`: one database lookup per address,
every later request of the session a dictionary hit.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from control_api.plane import ControlPlane, NotReady
from control_api.revocations import scopes_for
from control_api.security import PlaybackTokenInvalid, read_playback_token
from control_api.store import recordings, streams
from control_api.store.audit import Actor
from engine.auth import PlaybackGrant, PlaybackRequest, PublishGrant, PublishRequest
from engine.errors import GeoBlocked, PlaybackDenied, PublishDenied
from engine.geo import GeoRule
from packager.assets.ids import is_asset_id

log = logging.getLogger(__name__)

PUBLISHING_STATUSES = frozenset({"active", "warning", "top_performer"})
VISIBILITY_CACHE_S = 3.0
VISIBILITY_CACHE_SIZE = 10_000


class StoreChecks:
    def __init__(self, plane: ControlPlane) -> None:
        self._plane = plane
        self.geo_refused = 0
        """Playback requests refused by a stream's geographic rule."""
        # playback id -> (visibility, revocation scopes, geo rule, cached until)
        self._visibility: OrderedDict[str, tuple[str, tuple[str, ...], GeoRule | None, float]] = OrderedDict()

    async def authorize_publish(self, request: PublishRequest) -> PublishGrant:
        plane = self._plane
        if not request.key or len(request.key) > 256:
            raise PublishDenied("missing or oversized stream key")
        try:
            owner = await streams.key_owner(plane.db, request.key)
        except NotReady as e:
            raise PublishDenied("control API not ready") from e
        if owner is None:
            raise PublishDenied("unknown or revoked stream key")
        if owner["banned"]:
            raise PublishDenied("the stream key's owner is banned")
        if owner["role"] not in ("creator", "admin"):
            raise PublishDenied("the stream key's owner is not a creator")
        if owner["creator_status"] not in PUBLISHING_STATUSES:
            raise PublishDenied(f"creator status {owner['creator_status']} may not publish")
        actor = Actor("system", None, request.remote)
        stream = await streams.open_stream(plane.db, owner["id"])
        if stream is None:
            stream = await streams.create_stream(
                plane.db, actor, owner["id"], {"title": f"{owner['display_name']} live"}, plane.clock()
            )
        await plane.go_live(actor, stream["id"])
        await plane.apply_settings(streams.stream_view(stream), publishing_here=True)
        self._visibility.pop(stream["playback_id"], None)
        log.info("publish granted to %s (%s) as %s", owner["username"], request.protocol, stream["playback_id"])
        protection = stream["protection"]
        return PublishGrant(
            playback_name=str(stream["playback_id"]),
            stream_id=str(stream["id"]),
            protection=str(protection) if protection is not None else None,
        )

    async def publish_ended(self, grant: PublishGrant) -> None:
        if grant.stream_id is None:
            return
        await self._plane.end_stream(Actor("system", None), grant.stream_id, "publisher ended", kick=False)

    def forget(self, content: str) -> None:
        """Drop what is cached of a stream or asset (``asset:ID``), such as
        right after it was deleted."""
        self._visibility.pop(content, None)

    async def authorize_playback(self, request: PlaybackRequest) -> PlaybackGrant:
        plane = self._plane
        found = await self._visibility_of(request.playback_name)
        if found is None:
            raise PlaybackDenied("no such stream" if request.asset_id is None else "no such asset")
        visibility, scopes, rule = found
        if rule is not None:
            country = await plane.geo.country(request.remote)
            if not rule.permits(country):
                self.geo_refused += 1
                raise GeoBlocked(country)
        if visibility == "free":
            return PlaybackGrant(public=True)
        if not request.token:
            raise PlaybackDenied("this stream needs a playback token; join it first")
        try:
            claims = read_playback_token(plane.secret, request.token, request.playback_name, plane.clock())
        except PlaybackTokenInvalid as e:
            raise PlaybackDenied(str(e)) from e
        if plane.revocations.revoked(claims.viewer_id, scopes, claims.issued_at):
            raise PlaybackDenied("access to this stream has ended for this viewer")
        return PlaybackGrant(public=False)

    async def _visibility_of(self, playback_id: str) -> tuple[str, tuple[str, ...], GeoRule | None] | None:
        now = self._plane.clock()
        cached = self._visibility.get(playback_id)
        if cached is not None and cached[3] > now:
            return cached[0], cached[1], cached[2]
        asset_id = PlaybackRequest(playback_id, None, "").asset_id
        try:
            if asset_id is not None:
                row = await recordings.find(self._plane.db, asset_id) if is_asset_id(asset_id) else None
            else:
                row = await streams.by_playback_id(self._plane.db, playback_id)
        except NotReady as e:
            raise PlaybackDenied("control API not ready") from e
        if row is None:
            return None
        visibility = str(row["visibility"])
        # A recording's tokens end with its stream's: a refunded unlock of
        # the stream or a cancelled subscription closes its recordings too.
        # Its stream's geographic rule applies to it as well.
        scopes = scopes_for(str(row["user_id"]), str(row["playback_id"]), visibility)
        rule = streams.geo_rule(row)
        self._visibility[playback_id] = (visibility, scopes, rule, now + VISIBILITY_CACHE_S)
        self._visibility.move_to_end(playback_id)
        while len(self._visibility) > VISIBILITY_CACHE_SIZE:
            self._visibility.popitem(last=False)
        return visibility, scopes, rule
