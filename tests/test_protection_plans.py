"""Which streams the engine encrypts: the publish grant's scheme, else the
policy's default; never clear when encryption is wanted but cannot be done."""

from __future__ import annotations

import pytest

from drm.model import Protection
from engine.app.protection import ProtectionPolicy, stream_plans
from engine.auth import PublishGrant, grant_settings
from engine.registry import LiveStream, StreamRegistry
from packager.hls.keys import ProtectionError, SegmentProtection
from tests.fixed_keys import FixedKeys, fixed_key


def test_grant_settings_name_the_protection_only_when_the_grant_does() -> None:
    assert grant_settings(PublishGrant("a")) == {}
    assert grant_settings(PublishGrant("a", protection="sample-aes")) == {"protection": "sample-aes"}


async def test_the_grant_decides_and_the_default_fills_in() -> None:
    registry = StreamRegistry(grace_s=0)
    provider = FixedKeys()
    provider.key_period("default", 6)  # an earlier broadcast under the same name
    plans = stream_plans(ProtectionPolicy(Protection.AES_128, provider, rotate_every=5), registry)
    seen: dict[str, SegmentProtection | None] = {}

    def created(stream: LiveStream) -> None:
        seen[str(stream.key)] = plans(str(stream.key))

    registry.on_stream_created(created)
    registry.claim("default")
    registry.claim("clear", {"protection": "none"})
    registry.claim("sampled", {"protection": "sample-aes"})
    assert seen["clear"] is None
    default, sampled = seen["default"], seen["sampled"]
    assert default is not None and sampled is not None
    assert default.scheme is Protection.AES_128 and sampled.scheme is Protection.SAMPLE_AES
    first = 7  # after the earlier broadcast's highest period; asked once, whoever asks
    assert default.first_period() == first and default.rotate_every == 5
    assert sampled.first_period() == 0
    provider.key_period("default", 9)
    assert default.first_period() == first
    period = default.periods(first)
    assert period.key == fixed_key("default", first) and period.content_id == "default"
    assert default.key_uri(b"\x01" * 16) == "/keys/default/" + "01" * 16


async def test_encryption_without_a_provider_or_with_an_unknown_scheme_is_refused() -> None:
    registry = StreamRegistry(grace_s=0)
    no_keys = stream_plans(ProtectionPolicy(Protection.NONE, None), registry)
    assert no_keys("anything") is None
    registry.configure("paid", "protection", "aes-128")
    with pytest.raises(ProtectionError):
        no_keys("paid")
    registry.configure("odd", "protection", "rot13")
    with pytest.raises(ProtectionError):
        stream_plans(ProtectionPolicy(Protection.NONE, FixedKeys()), registry)("odd")


def test_vod_plans_keep_one_period_unless_asked() -> None:
    plan = ProtectionPolicy(provider=FixedKeys()).plan("asset", Protection.AES_128)
    assert plan is not None and plan.rotate_every == 0 and plan.first_period() == 0
    assert ProtectionPolicy(provider=FixedKeys()).plan("asset", Protection.NONE) is None
