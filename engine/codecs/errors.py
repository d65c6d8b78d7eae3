"""Errors raised by the codec helpers.

Everything in :mod:`engine.codecs` reads bytes that came from a publisher, so
a malformed record is the peer's fault and surfaces as :class:`CodecError`.
It is a :class:`ValueError` so that callers who only care about "bad input"
can catch the builtin.
"""

from __future__ import annotations


class CodecError(ValueError):
    """A decoder configuration record, parameter set or bitstream is malformed
    or uses a feature these helpers do not understand."""
