"""The CPIX key provider: content keys and DRM system data from an outside
key service, so an operator can plug in a commercial Widevine, PlayReady or
FairPlay service without the packager, the playlists or the key endpoints
changing.

For each (content ID, key period) not yet in the local store, the provider
POSTs a CPIX request (:func:`drm.cpix.request`) to ``drm.key_service_url``
and reads the answer (:func:`drm.cpix.parse`): the key, its key ID and IV,
a ``pssh`` per DRM system and the HLS ``EXT-X-KEY`` data (FairPlay's
``skd://`` URI). The answer is kept sealed in the local store, so the
service is asked once per period, by whichever thread or worker process
gets there first; the others read the same key.

The key ID the request proposes is derived from the master key, the
content ID and the period, so asking again (after a crash, from another
process) proposes the same one and a service that honours proposals
answers the same key.

Calls block (the network, the disk): callers on an event loop run them in
a worker thread. Every request has a connect timeout and a deadline for
the whole answer; failures to connect, timeouts and 5xx answers are tried
again ``retries`` times; everything else fails at once with
:class:`drm.errors.KeyServiceError` or :class:`drm.errors.CpixError`.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import logging
import secrets
import ssl
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping

from drm import cpix
from drm.errors import CpixError, KeyServiceError, KeyServiceTimeout
from drm.local import check_content_id, clearkey_system
from drm.model import KEY_BYTES, ContentKey, DrmSystemData, KeyPeriod, SystemId
from drm.store import ContentKeyStore

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = cpix.MAX_DOCUMENT_BYTES
KID_PURPOSE = "drm.cpix.kids"


class _Retryable(KeyServiceError):
    """A failure worth another try (connection, timeout, 5xx)."""


class HttpKeyProvider:
    """:class:`drm.model.KeyProvider` backed by a CPIX key service.

    ``kid_secret`` (derived from the master key) makes proposed key IDs;
    ``systems`` are the DRM systems whose data the service is asked for;
    ``scheme`` is the ``commonEncryptionScheme`` asked for (``cbcs``,
    ``cenc``) or ``None``; ``include_clearkey`` adds the ClearKey system
    (this engine's own licence endpoint) when the service gives none.
    """

    def __init__(
        self,
        store: ContentKeyStore,
        url: str,
        kid_secret: bytes,
        *,
        systems: tuple[uuid.UUID, ...] = (),
        headers: Mapping[str, str] | None = None,
        connect_timeout_s: float = 3.0,
        timeout_s: float = 10.0,
        retries: int = 2,
        scheme: str | None = None,
        include_clearkey: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the key service URL must be an http or https URL")
        self.store = store
        self._url = parts
        self._kid_secret = kid_secret
        self.systems = systems
        self._headers = {
            "Content-Type": "application/xml; charset=utf-8",
            "Accept": "application/xml, text/xml",
            "User-Agent": "fanz-media-engine",
            **(headers or {}),
        }
        self.connect_timeout_s = connect_timeout_s
        self.timeout_s = timeout_s
        self.retries = retries
        self.scheme = scheme
        self.include_clearkey = include_clearkey
        self._clock = clock
        self._sleep = sleep
        self._locks: dict[tuple[str, int], threading.Lock] = {}
        self._locks_lock = threading.Lock()
        # The URL without its query (which may carry a credential), for messages.
        self.service = urllib.parse.urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))

    # -- KeyProvider ------------------------------------------------------------
    def key_period(self, content_id: str, index: int) -> KeyPeriod:
        check_content_id(content_id, index)
        found = self.store.get(content_id, index)
        if found is not None:
            return found
        lock = self._lock_for(content_id, index)
        with lock:
            found = self.store.get(content_id, index)
            if found is not None:
                return found
            period = self._fetch(content_id, index)
            stored = self.store.put_if_absent(period)
        with self._locks_lock:
            self._locks.pop((content_id, index), None)
        return stored

    def find_key(self, content_id: str, kid: bytes) -> ContentKey | None:
        """Keys already fetched (by any process sharing the data directory);
        the service is not asked: a viewer can only need a key that a
        packager fetched to encrypt with."""
        if len(kid) != KEY_BYTES:
            return None
        check_content_id(content_id)
        return self.store.find(content_id, kid)

    def highest_period(self, content_id: str) -> int | None:
        return self.store.highest_period(content_id)

    # -- internals -------------------------------------------------------------
    def _lock_for(self, content_id: str, index: int) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault((content_id, index), threading.Lock())

    def proposed_kid(self, content_id: str, index: int) -> bytes:
        mac = hmac.new(self._kid_secret, f"{content_id}\x00{index}".encode(), hashlib.sha256)
        return mac.digest()[:KEY_BYTES]

    def _fetch(self, content_id: str, index: int) -> KeyPeriod:
        kid = self.proposed_kid(content_id, index)
        body = cpix.request(content_id, index, kid, self.systems, self.scheme)
        where = f"key service {self.service}, content {content_id!r}, key period {index}"
        answer = self._post_with_retries(body, where)
        try:
            doc = cpix.parse(answer)
            if doc.content_id is not None and doc.content_id != content_id:
                raise CpixError(f"the answer is for content {doc.content_id[:80]!r}")
            key, systems = cpix.key_for_period(doc, index, kid)
        except CpixError as exc:
            raise CpixError(f"{where}: {exc}") from exc
        assert key.key is not None  # key_for_period checks
        data = [
            DrmSystemData(system_id=s.system_id, pssh=s.pssh, hls_key_format=s.hls_key_format,
                          hls_key_uri=s.hls_key_uri)
            for s in systems
        ]
        if self.include_clearkey and not any(s.system_id == SystemId.CLEARKEY.value for s in data):
            data.append(clearkey_system(key.kid))
        iv = key.iv if key.iv is not None else secrets.token_bytes(KEY_BYTES)
        return KeyPeriod(content_id, index, ContentKey(kid=key.kid, key=key.key, iv=iv), tuple(data))

    def _post_with_retries(self, body: bytes, where: str) -> bytes:
        attempt = 0
        while True:
            try:
                return self._post(body, where)
            except _Retryable as exc:
                if attempt >= self.retries:
                    raise (KeyServiceTimeout(str(exc)) if isinstance(exc.__cause__, TimeoutError)
                           else KeyServiceError(str(exc))) from exc.__cause__
                delay = min(2.0, 0.25 * 2**attempt)
                log.warning("%s; trying again in %.2f s", exc, delay)
                attempt += 1
                self._sleep(delay)

    def _post(self, body: bytes, where: str) -> bytes:
        """One POST; raises :class:`_Retryable` for what another try may fix."""
        url = self._url
        deadline = self._clock() + self.timeout_s
        connection: http.client.HTTPConnection
        if url.scheme == "https":
            connection = http.client.HTTPSConnection(
                url.hostname or "", url.port, timeout=self.connect_timeout_s, context=ssl.create_default_context()
            )
        else:
            connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=self.connect_timeout_s)
        target = url.path or "/"
        if url.query:
            target += "?" + url.query

        def remaining() -> float:
            left = deadline - self._clock()
            if left <= 0:
                raise TimeoutError("deadline passed")
            return left

        try:
            try:
                connection.connect()
                assert connection.sock is not None
                connection.sock.settimeout(remaining())
                connection.request("POST", target, body, dict(self._headers))
                response = connection.getresponse()
                chunks: list[bytes] = []
                size = 0
                while True:
                    connection.sock.settimeout(remaining())
                    chunk = response.read1(65536)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > MAX_ANSWER_BYTES:
                        raise KeyServiceError(f"{where}: the answer is larger than {MAX_ANSWER_BYTES} bytes")
                    chunks.append(chunk)
            except TimeoutError as exc:
                raise _Retryable(f"{where}: no answer within {self.timeout_s:g} s") from exc
            except (OSError, http.client.HTTPException) as exc:
                raise _Retryable(f"{where}: cannot reach the service: {type(exc).__name__}: {exc}") from exc
        finally:
            connection.close()
        status = response.status
        if status >= 500:
            raise _Retryable(f"{where}: the service answered HTTP {status} {response.reason}")
        if status != 200:
            what = "redirects are not followed" if 300 <= status < 400 else "refused"
            raise KeyServiceError(f"{where}: the service answered HTTP {status} {response.reason} ({what})")
        return b"".join(chunks)
