"""Publish and playback checks: interfaces the engine defines and the control
API implements.

Protocol code (RTMP, WHIP, HLS delivery) only ever sees these interfaces, so
it never imports control_api/. ``--dev`` plugs in :class:`AllowAllChecks`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from engine.errors import PlaybackDenied, PublishDenied

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PublishRequest:
    """What a publisher presented: the RTMP application (``live``), the secret
    stream key, the protocol and the peer's address."""

    app: str
    key: str
    protocol: str
    remote: str


@dataclass(frozen=True, slots=True)
class PublishGrant:
    """A successful publish check.

    ``playback_name`` is the public name viewers use (never the secret key);
    ``stream_id`` is the platform's record id when there is one;
    ``protection`` is how the stream's media is encrypted (a
    :class:`drm.model.Protection` value such as ``"aes-128"``) when the
    platform decides it per stream, ``None`` for the configured default.
    """

    playback_name: str
    stream_id: str | None = None
    protection: str | None = None


PROTECTION_SETTING = "protection"
"""The stream setting (see :meth:`engine.registry.StreamRegistry.configure`)
that names a stream's protection scheme."""


def grant_settings(grant: PublishGrant) -> dict[str, object]:
    """The stream settings a publish grant decides, for
    :meth:`engine.registry.StreamRegistry.claim`."""
    return {PROTECTION_SETTING: grant.protection} if grant.protection is not None else {}


ASSET_CONTENT_PREFIX = "asset:"
"""Content names of VOD assets start with this; stream playback names never
hold ``:``, so the two never collide."""


def asset_content(asset_id: str) -> str:
    """The content name a playback request and a playback token use for the
    VOD asset ``asset_id``."""
    return ASSET_CONTENT_PREFIX + asset_id


@dataclass(frozen=True, slots=True)
class PlaybackRequest:
    """A viewer asking for a stream or a VOD asset: the content name (a
    stream's playback name, or ``asset:ID`` from :func:`asset_content`), the
    token it presented (``None`` when it presented none) and its address.
    A token opens only the content it names."""

    playback_name: str
    token: str | None
    remote: str

    @property
    def asset_id(self) -> str | None:
        """The VOD asset asked for, or ``None`` for a live stream."""
        if self.playback_name.startswith(ASSET_CONTENT_PREFIX):
            return self.playback_name[len(ASSET_CONTENT_PREFIX):]
        return None


@dataclass(frozen=True, slots=True)
class PlaybackGrant:
    """A successful playback check.

    ``public``: anyone may watch this stream without a token (a free
    stream), so shared caches (CDNs, proxies) may keep its media. Media of
    any other stream is marked private: a shared cache would serve it to
    viewers without a token, and past the token's life.
    """

    public: bool = False


class PublishCheck(Protocol):
    async def authorize_publish(self, request: PublishRequest) -> PublishGrant:
        """Return a grant or raise :class:`PublishDenied`."""
        ...

    async def publish_ended(self, grant: PublishGrant) -> None:
        """Called once when a granted stream has ended for good."""
        ...


class PlaybackCheck(Protocol):
    async def authorize_playback(self, request: PlaybackRequest) -> PlaybackGrant | None:
        """Return when the viewer may watch, raise :class:`PlaybackDenied`
        otherwise. ``None`` is a grant that is not public."""
        ...


class AllowAllChecks:
    """The ``--dev`` checks: any key publishes (its playback name is the key
    itself) and anyone plays. Never use in production."""

    def __init__(self) -> None:
        log.warning(
            "DEVELOPMENT MODE: every stream key is accepted and every viewer is "
            "allowed; stream keys double as public playback names. Do not expose "
            "this engine to the internet."
        )

    async def authorize_publish(self, request: PublishRequest) -> PublishGrant:
        if not request.key:
            raise PublishDenied("empty stream key")
        return PublishGrant(playback_name=request.key)

    async def publish_ended(self, grant: PublishGrant) -> None:
        return None

    async def authorize_playback(self, request: PlaybackRequest) -> PlaybackGrant:
        return PlaybackGrant(public=True)


class StaticKeyChecks:
    """Checks from the config file: a fixed table of stream keys mapped to
    playback names, and free playback for everyone.

    This is what a single node without the control API runs.
    """

    def __init__(self, keys: dict[str, str]) -> None:
        self._keys = dict(keys)

    async def authorize_publish(self, request: PublishRequest) -> PublishGrant:
        name = self._keys.get(request.key)
        if name is None:
            raise PublishDenied("unknown stream key")
        return PublishGrant(playback_name=name)

    async def publish_ended(self, grant: PublishGrant) -> None:
        return None

    async def authorize_playback(self, request: PlaybackRequest) -> PlaybackGrant:
        if not request.playback_name:
            raise PlaybackDenied("no stream named")
        return PlaybackGrant(public=True)
