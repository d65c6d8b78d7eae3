"""The control API's error tree.

Everything this package raises derives from :class:`ControlApiError`.
:class:`ProblemError` and its children are refusals the HTTP layer turns into
RFC 9457 problem details; :class:`StoreError` marks a database that broke its
contract (a remote failure, kept apart from misuse); :class:`ApiConfigError`
is local misuse of the configuration.
"""

from __future__ import annotations

from typing import Any


class ControlApiError(Exception):
    """Base of every error raised by control_api."""


class ApiConfigError(ControlApiError, ValueError):
    """The API configuration is invalid (a local mistake, found at start-up)."""


class StoreError(ControlApiError):
    """The database failed or returned something the schema forbids."""


class WebhookError(ControlApiError):
    """A webhook target refused, timed out or is not allowed."""


class ProblemError(ControlApiError):
    """A request the API refuses; rendered as ``application/problem+json``.

    ``kind`` becomes the problem ``type`` (``/problems/<kind>``) so that
    clients can branch on it without parsing the human ``detail``.
    """

    status = 400
    kind = "bad-request"
    title = "Bad request"

    def __init__(self, detail: str, *, extra: dict[str, Any] | None = None, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.extra = extra or {}
        self.headers = headers or {}

    def body(self, instance: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": f"/problems/{self.kind}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "instance": instance,
        }
        out.update(self.extra)
        return out


class ValidationFailed(ProblemError):
    status = 422
    kind = "validation-failed"
    title = "The request is invalid"

    def __init__(self, errors: list[dict[str, str]]):
        first = errors[0] if errors else {"path": "", "message": "invalid"}
        super().__init__(f"{first['path'] or 'body'}: {first['message']}", extra={"errors": errors})


class MalformedRequest(ProblemError):
    status = 400
    kind = "malformed-request"
    title = "The request could not be read"


class Unauthenticated(ProblemError):
    status = 401
    kind = "unauthenticated"
    title = "Authentication required"

    def __init__(self, detail: str, *, kind: str | None = None):
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="fanz"'})
        if kind is not None:
            self.kind = kind


class Forbidden(ProblemError):
    status = 403
    kind = "forbidden"
    title = "Not allowed"

    def __init__(self, detail: str, *, kind: str | None = None):
        super().__init__(detail)
        if kind is not None:
            self.kind = kind


class NotFound(ProblemError):
    status = 404
    kind = "not-found"
    title = "Not found"


class Conflict(ProblemError):
    status = 409
    kind = "conflict"
    title = "Conflict"

    def __init__(self, detail: str, *, kind: str | None = None):
        super().__init__(detail)
        if kind is not None:
            self.kind = kind


class UnavailableForLegalReasons(ProblemError):
    """The stream's geographic rule refuses the caller's country (RFC 7725)."""

    status = 451
    kind = "geo-blocked"
    title = "Unavailable for legal reasons"


class RateLimited(ProblemError):
    status = 429
    kind = "rate-limited"
    title = "Too many requests"

    def __init__(self, detail: str, retry_after_s: float):
        seconds = max(1, int(retry_after_s + 0.999))
        super().__init__(detail, extra={"retry_after": seconds}, headers={"Retry-After": str(seconds)})
