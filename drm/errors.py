"""Errors of the ``drm`` package.

Everything here derives from :class:`DrmError`. :class:`KeyStoreError` is a
master key that cannot be loaded or created (the operator's configuration or
the disk); :class:`SealedDataError` is stored ciphertext that this master
key does not open: tampered with, or sealed under another key.
"""

from __future__ import annotations


class DrmError(Exception):
    """Base of every error this package raises."""


class KeyStoreError(DrmError):
    """The master key file is missing, unreadable or malformed."""


class SealedDataError(DrmError, ValueError):
    """Sealed data failed authentication under this master key."""


class SampleEncryptionError(DrmError, ValueError):
    """A sample cannot be encrypted as asked: a codec or scheme common
    encryption does not cover here, or a sample that is not the run of
    length-prefixed NAL units its track promises."""
