"""Errors of the ``drm`` package.

Everything here derives from :class:`DrmError`. :class:`KeyStoreError` is a
master key that cannot be loaded or created (the operator's configuration or
the disk); :class:`SealedDataError` is stored ciphertext that this master
key does not open: tampered with, or sealed under another key.

The content keys' own errors keep the two sides apart: the outside key
service failing or answering nonsense (:class:`KeyServiceError`,
:class:`CpixError`) and a player's malformed licence request
(:class:`LicenceRequestError`) are the peer's doing; the local content key
store failing (:class:`ContentKeyStoreError`) is ours or the disk's.
"""

from __future__ import annotations


class DrmError(Exception):
    """Base of every error this package raises."""


class KeyStoreError(DrmError):
    """The master key file is missing, unreadable or malformed."""


class SealedDataError(DrmError, ValueError):
    """Sealed data failed authentication under this master key."""


class ContentKeyStoreError(DrmError):
    """The content key store cannot be opened, read or written (the disk,
    the SQLite file, or a record this master key does not open)."""


class KeyServiceError(DrmError):
    """The outside key service could not be reached, or answered with an
    HTTP error. The message names the service's URL, the content ID and the
    key period, never a key."""


class KeyServiceTimeout(KeyServiceError, TimeoutError):
    """The key service did not answer within ``drm.key_service_timeout_s``."""


class CpixError(KeyServiceError, ValueError):
    """A CPIX document from the key service is malformed, unsafe (a DTD,
    entities) or lacks what was asked for."""


class LicenceRequestError(DrmError, ValueError):
    """A player's ClearKey licence request is not one this engine reads."""


class SampleEncryptionError(DrmError, ValueError):
    """A sample cannot be encrypted as asked: a codec or scheme common
    encryption does not cover here, or a sample that is not the run of
    length-prefixed NAL units its track promises."""
