"""The engine's master key, and what is derived from it.

One 256-bit master key per engine (per cluster, when nodes share the file):
read from the file ``server.master_key_file`` names, or generated once into
``<data_dir>/master.key`` with mode 0600. Nothing uses the master key
directly: each purpose (secrets at rest in the control API's database,
content keys later) gets its own key derived with HKDF-SHA256, so one use can
never decrypt another's data.

:class:`Sealer` encrypts short secrets (TOTP seeds, webhook signing secrets)
with AES-256-GCM. The associated data names the record a secret belongs to,
so a ciphertext copied into another row does not open there. Sealed text
reads ``v1:<base64url(nonce | ciphertext | tag)>``; nothing stored in clear
by earlier versions starts that way, which is how clear rows are found and
sealed on start-up.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from drm.errors import KeyStoreError, SealedDataError

log = logging.getLogger(__name__)

MASTER_KEY_FILE = "master.key"
KEY_BYTES = 32
SEALED_PREFIX = "v1:"
_NONCE_BYTES = 12


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) if needed and make it 0700: the data
    directory holds the database, secrets and paid media, for the engine's
    user alone. The mode is set explicitly, whatever the process umask."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if stat.S_IMODE(path.stat().st_mode) != 0o700:
        os.chmod(path, 0o700)


def write_private_file(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600 and write ``text``; refuses to
    overwrite (``FileExistsError``), so two starting processes cannot each
    write a different key."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def _parse_key(text: str, source: Path) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError as exc:
        raise KeyStoreError(f"{source}: the master key must be {KEY_BYTES * 2} hex digits") from exc
    if len(key) != KEY_BYTES:
        raise KeyStoreError(f"{source}: the master key must be {KEY_BYTES * 2} hex digits, not {len(key) * 2}")
    return key


class KeyStore:
    """The master key and the keys derived from it."""

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != KEY_BYTES:
            raise KeyStoreError(f"a master key is {KEY_BYTES} bytes")
        self._master = master_key

    @classmethod
    def load(cls, data_dir: Path, key_file: Path | None = None) -> KeyStore:
        """The key in ``key_file`` when one is configured (it must exist),
        else the one in ``data_dir/master.key``, created on first use."""
        if key_file is not None:
            try:
                text = key_file.read_text()
                mode = stat.S_IMODE(key_file.stat().st_mode)
            except OSError as exc:
                raise KeyStoreError(f"cannot read the master key file {key_file}: {exc}") from exc
            if mode & 0o077:
                log.warning("master key file %s is readable by others (mode %o); make it 0600", key_file, mode)
            return cls(_parse_key(text, key_file))
        make_private_dir(data_dir)
        path = data_dir / MASTER_KEY_FILE
        try:
            write_private_file(path, secrets.token_bytes(KEY_BYTES).hex() + "\n")
            log.warning(
                "GENERATED A NEW MASTER KEY in %s (mode 0600). Back it up now: sealed secrets and every DRM "
                "content key open only with it. Several nodes must share one (server.master_key_file).",
                path,
            )
        except FileExistsError:
            pass
        except OSError as exc:
            raise KeyStoreError(f"cannot create the master key file {path}: {exc}") from exc
        try:
            text = path.read_text()
        except OSError as exc:
            raise KeyStoreError(f"cannot read the master key file {path}: {exc}") from exc
        if stat.S_IMODE(path.stat().st_mode) != 0o600:
            os.chmod(path, 0o600)
        return cls(_parse_key(text, path))

    @classmethod
    def from_hex(cls, text: str, source: str = "the configured master key") -> KeyStore:
        """A key given as 64 hex digits (``drm.master_key``, the
        ``FANZ_DRM_MASTER_KEY`` environment variable); ``source`` names it in
        errors, which never repeat the value."""
        return cls(_parse_key(text, Path(source)))

    def derive(self, purpose: str, length: int = KEY_BYTES) -> bytes:
        """A key for one ``purpose`` (a fixed label such as
        ``"control_api.secrets"``), the same on every load."""
        hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=b"fanz-media/" + purpose.encode())
        return hkdf.derive(self._master)

    def sealer(self, purpose: str) -> Sealer:
        return Sealer(self.derive(purpose))


class Sealer:
    """AES-256-GCM for short text secrets, bound to the record they belong to."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    @staticmethod
    def is_sealed(text: str) -> bool:
        return text.startswith(SEALED_PREFIX)

    def seal(self, plaintext: str, context: str) -> str:
        """Encrypt ``plaintext``; ``context`` (for example ``"totp:<user id>"``)
        must be given again to open it."""
        nonce = os.urandom(_NONCE_BYTES)
        blob = nonce + self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return SEALED_PREFIX + base64.urlsafe_b64encode(blob).decode().rstrip("=")

    def open(self, sealed: str, context: str) -> str:
        """The plaintext of :meth:`seal`'s output; raises
        :class:`SealedDataError` when it was altered, belongs to another
        context or was sealed under another master key."""
        if not self.is_sealed(sealed):
            raise SealedDataError("not sealed text")
        body = sealed[len(SEALED_PREFIX):]
        try:
            blob = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except ValueError as exc:
            raise SealedDataError("sealed text is not base64") from exc
        if len(blob) < _NONCE_BYTES + 16:
            raise SealedDataError("sealed text is too short")
        try:
            plain = self._aead.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], context.encode())
        except InvalidTag as exc:
            raise SealedDataError("sealed text does not open with this master key and context") from exc
        return plain.decode()
