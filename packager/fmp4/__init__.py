"""Fragmented MP4 / CMAF writing for HLS, LL-HLS and recordings.

Layers, bottom up: :mod:`~packager.fmp4.boxes` (box framing),
:mod:`~packager.fmp4.entries` (codec sample entries),
:mod:`~packager.fmp4.init` (``ftyp`` + ``moov``),
:mod:`~packager.fmp4.fragment` (``moof`` + ``mdat``),
:mod:`~packager.fmp4.protection` (common encryption boxes) and
:mod:`~packager.fmp4.writer` (:class:`Fmp4Writer`, what outputs use).
"""

from packager.fmp4.errors import Fmp4EncryptionError, Fmp4Error, Fmp4TrackError, Fmp4UsageError
from packager.fmp4.writer import Fmp4Writer

__all__ = ["Fmp4EncryptionError", "Fmp4Error", "Fmp4TrackError", "Fmp4UsageError", "Fmp4Writer"]
