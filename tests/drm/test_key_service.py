"""The CPIX key provider against a key service the test serves on
loopback: keys and DRM system data fetched once per period and kept
sealed; a service that is down, slow, failing, refusing or answering
nonsense gives a clear error within its time limits."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from drm.config import DrmConfig, ProviderKind
from drm.errors import CpixError, KeyServiceError, KeyServiceTimeout
from drm.model import Protection, SystemId
from drm.service import HttpKeyProvider
from drm.setup import open_key_provider
from tests.conftest import free_port
from tests.drm.cpix_service import running_service, service_key
from tests.drm.test_keys import MASTER, assert_no_clear_key


def http_provider(data_dir: Path, url: str, **settings: Any) -> HttpKeyProvider:
    values: dict[str, Any] = {
        "provider": ProviderKind.HTTP, "key_service_url": url, "master_key": MASTER,
        "key_service_connect_timeout_s": 1.0, "key_service_timeout_s": 1.0, "key_service_retries": 0,
    }
    config = DrmConfig(**{**values, **settings})
    provider = open_key_provider(config, data_dir)
    assert isinstance(provider, HttpKeyProvider)
    return provider


def test_config_strings_become_the_provider_enum() -> None:
    from engine.app.config import load_config

    config = load_config(None, env={"FANZ_DRM_PROVIDER": "http", "FANZ_DRM_KEY_SERVICE_URL": "https://k.example/c"})
    assert config.drm.provider is ProviderKind.HTTP


async def test_keys_and_system_data_come_from_the_service_once(tmp_path: Path) -> None:
    async with running_service() as service:
        provider = http_provider(tmp_path, f"{service.base}/cpix/good", protection=Protection.CBCS)
        provider._sleep = lambda s: None
        period = await asyncio.to_thread(provider.key_period, "show-1", 4)
        assert period.key.key == service_key("show-1", 4)
        assert period.key.iv == bytes(range(16))
        assert period.key.kid == provider.proposed_kid("show-1", 4)
        request = service.requests[0]
        assert request.content_id == "show-1" and request.periods == (("keyPeriod_4", 4),)
        assert request.keys[0].key is None and request.keys[0].scheme == "cbcs"
        assert {s.system_id for s in request.systems} == {
            SystemId.WIDEVINE.value, SystemId.PLAYREADY.value, SystemId.FAIRPLAY.value}
        systems = {s.system_id: s for s in period.systems}
        assert systems[SystemId.WIDEVINE.value].pssh is not None
        assert systems[SystemId.WIDEVINE.value].pssh.endswith(b"wv:" + period.key.kid)  # type: ignore[union-attr]
        fairplay = systems[SystemId.FAIRPLAY.value]
        assert fairplay.hls_key_uri == f"skd://keys.example/{period.key.kid.hex()}"
        assert fairplay.hls_key_format == "com.apple.streamingkeydelivery"
        assert systems[SystemId.CLEARKEY.value].pssh is not None  # this engine's own licence endpoint

        # Cached, sealed: asked once, even by a provider opened later on the same data dir.
        assert await asyncio.to_thread(provider.key_period, "show-1", 4) == period
        later = http_provider(tmp_path, f"{service.base}/cpix/good")
        assert await asyncio.to_thread(later.key_period, "show-1", 4) == period
        assert await asyncio.to_thread(later.find_key, "show-1", period.key.kid) == period.key
        assert await asyncio.to_thread(later.find_key, "show-2", period.key.kid) is None
        assert service.hits == {"good": 1}
        # Another period is another key.
        other = await asyncio.to_thread(provider.key_period, "show-1", 5)
        assert other.key.key == service_key("show-1", 5) and service.hits == {"good": 2}
        provider.store.close()
        later.store.close()
    assert_no_clear_key(tmp_path, [period.key.key, other.key.key])


async def test_fairplay_from_a_whole_ext_x_key_line(tmp_path: Path) -> None:
    async with running_service() as service:
        provider = http_provider(tmp_path, f"{service.base}/cpix/hls-line", key_service_systems=["fairplay"])
        period = await asyncio.to_thread(provider.key_period, "show", 0)
        fairplay = next(s for s in period.systems if s.system_id == SystemId.FAIRPLAY.value)
        assert fairplay.hls_key_uri == f"skd://line.example/{period.key.kid.hex()}"
        assert fairplay.hls_key_format == "com.apple.streamingkeydelivery"
        provider.store.close()


async def test_configured_headers_reach_the_service(tmp_path: Path) -> None:
    async with running_service() as service:
        refused = http_provider(tmp_path / "a", f"{service.base}/cpix/auth")
        with pytest.raises(KeyServiceError, match="HTTP 401"):
            await asyncio.to_thread(refused.key_period, "show", 0)
        allowed = http_provider(tmp_path / "b", f"{service.base}/cpix/auth",
                                key_service_headers={"X-Api-Key": "sesame"})
        await asyncio.to_thread(allowed.key_period, "show", 0)


@pytest.mark.parametrize(
    ("mode", "error", "message"),
    [
        ("malformed", CpixError, "not well-formed"),
        ("entities", CpixError, "DTD"),
        ("other-content", CpixError, "someone-else"),
        ("no-value", CpixError, "no value"),
        ("huge", KeyServiceError, "larger than"),
        ("forbidden", KeyServiceError, "HTTP 403"),
        ("redirect", KeyServiceError, "redirects are not followed"),
    ],
)
async def test_bad_answers_are_clear_errors(tmp_path: Path, mode: str, error: type[Exception], message: str) -> None:
    async with running_service() as service:
        provider = http_provider(tmp_path, f"{service.base}/cpix/{mode}", key_service_retries=2)
        with pytest.raises(error, match=message) as info:
            await asyncio.to_thread(provider.key_period, "show", 3)
        assert "key period 3" in str(info.value) and "'show'" in str(info.value)
        assert service.hits[mode] == 1  # not worth another try
        assert provider.store.get("show", 3) is None  # nothing cached
        provider.store.close()


async def test_a_service_that_is_down_fails_after_its_retries(tmp_path: Path) -> None:
    provider = http_provider(tmp_path, f"http://127.0.0.1:{free_port()}/cpix", key_service_retries=2)
    slept: list[float] = []
    provider._sleep = slept.append
    with pytest.raises(KeyServiceError, match="cannot reach the service"):
        await asyncio.to_thread(provider.key_period, "show", 0)
    assert len(slept) == 2
    provider.store.close()


async def test_a_failing_service_is_tried_again(tmp_path: Path) -> None:
    async with running_service() as service:
        provider = http_provider(tmp_path, f"{service.base}/cpix/error", key_service_retries=1)
        provider._sleep = lambda s: None
        with pytest.raises(KeyServiceError, match="HTTP 503"):
            await asyncio.to_thread(provider.key_period, "show", 0)
        assert service.hits["error"] == 2
        provider.store.close()


@pytest.mark.parametrize("mode", ["slow", "trickle"])
async def test_a_slow_service_times_out(tmp_path: Path, mode: str) -> None:
    async with running_service() as service:
        provider = http_provider(tmp_path, f"{service.base}/cpix/{mode}", key_service_timeout_s=0.3)
        # The deadline covers the whole answer, not each read: the trickle
        # sends a byte every 50 ms, and without it would end as a truncated
        # document (a CpixError) ten seconds later.
        with pytest.raises(KeyServiceTimeout, match=r"no answer within 0\.3 s"):
            await asyncio.to_thread(provider.key_period, "show", 0)
        provider.store.close()
