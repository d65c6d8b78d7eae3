"""Building the key provider the config asks for (called by the
composition root, and by commands that package VOD)."""

from __future__ import annotations

import logging
from pathlib import Path

from drm.config import DrmConfig, ProviderKind
from drm.keystore import KeyStore
from drm.local import LocalKeyProvider
from drm.service import KID_PURPOSE, HttpKeyProvider
from drm.store import ContentKeyStore

log = logging.getLogger(__name__)


def master_keys(config: DrmConfig, data_dir: Path, master_key_file: Path | None) -> KeyStore:
    """The master key: ``drm.master_key`` (or ``FANZ_DRM_MASTER_KEY``) when
    set, else the file ``server.master_key_file`` names, else
    ``data_dir/master.key``, generated once (mode 0600)."""
    if config.master_key:
        return KeyStore.from_hex(config.master_key, "drm.master_key")
    return KeyStore.load(data_dir, master_key_file)


def open_key_provider(
    config: DrmConfig, data_dir: Path, master_key_file: Path | None = None
) -> LocalKeyProvider | HttpKeyProvider:
    """The provider of ``drm.provider``, over the sealed store in ``data_dir``.
    Opens files: run it at start-up or off the event loop."""
    keys = master_keys(config, data_dir, master_key_file)
    store = ContentKeyStore.open(data_dir, keys)
    if config.provider is ProviderKind.HTTP:
        provider = HttpKeyProvider(
            store,
            config.key_service_url,
            keys.derive(KID_PURPOSE),
            systems=tuple(s.value for s in config.systems),
            headers=config.key_service_headers,
            connect_timeout_s=config.key_service_connect_timeout_s,
            timeout_s=config.key_service_timeout_s,
            retries=config.key_service_retries,
            scheme=config.protection.value if config.protection.common_encryption else None,
            include_clearkey=config.clear_key_delivery,
        )
        log.info("DRM: content keys from the key service %s", provider.service)
        return provider
    return LocalKeyProvider(store)
