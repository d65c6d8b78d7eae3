"""The ingest package's error tree.

Every ingest (RTMP today, others later) raises errors under :class:`IngestError`
so that the composition root can catch one package's failures without
swallowing another's. Errors caused by the remote peer are kept apart from
errors caused by the local caller misusing an API: the first closes only that
peer's connection, the second is a bug in our own code.
"""

from __future__ import annotations


class IngestError(Exception):
    """Base of every error raised by the ingest package."""


class IngestPeerError(IngestError):
    """The remote publisher broke its protocol or exceeded a limit."""


class IngestUsageError(IngestError):
    """Local code called an ingest API in a way it does not allow."""
