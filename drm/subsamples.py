"""Which bytes of a video sample common encryption protects (ISO/IEC
23001-7 §9.5, subsample encryption of NAL-structured video).

A sample is a run of length-prefixed NAL units. Each subsample is a clear
part followed by a protected part:

- the length prefix, the NAL unit header and the slice header of a video
  slice stay clear, so that a player can parse them outside its secure
  decoder; NAL units other than slices (SEI, parameter sets, filler...) stay
  clear whole;
- ``cenc`` (AES-CTR) protects whole 16-byte blocks only: the remainder of a
  slice's data joins the clear part in front of it;
- ``cbcs`` protects from the end of the slice header to the end of the NAL
  unit; the pattern (1 block encrypted, 9 skipped) leaves any trailing
  partial block clear, as the scheme requires.

A slice whose header cannot be read (an unknown parameter set, a truncated
unit) is left clear whole and counted: the map never guesses a boundary.
Clear runs longer than the 16-bit ``BytesOfClearData`` field are split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from drm.errors import SampleEncryptionError
from drm.model import Protection
from engine.codecs import CodecError
from engine.codecs.hevc_slice import HevcSliceHeaders
from engine.codecs.slice_header import AvcSliceHeaders
from engine.media import Codec

BLOCK = 16
MAX_CLEAR = 0xFFFF
"""``BytesOfClearData`` is 16 bits; ``BytesOfProtectedData`` is 32."""
MAX_PROTECTED = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Subsample:
    """One entry of a sample's subsample list in ``senc``."""

    clear: int
    protected: int


class SliceHeaders(Protocol):
    nal_length_size: int

    def observe(self, nal: bytes) -> None: ...

    def is_slice(self, nal: bytes) -> bool: ...

    def header_size(self, nal: bytes) -> int: ...


class SubsampleMap:
    """The subsample lists of one H.264 or HEVC track under one scheme.

    Feed it every sample of the track in decode order (in-band parameter
    sets are noted on the way); :attr:`unreadable_slices` counts slices left
    clear because their header could not be read, and
    :attr:`unreadable_parameter_sets` in-band parameter sets that did not
    parse. Callers report both (a metric, a rate-limited log line).
    """

    def __init__(self, codec: Codec, extradata: bytes, scheme: Protection) -> None:
        if scheme not in (Protection.CBCS, Protection.CENC):
            raise SampleEncryptionError(f"{scheme.value} is not a common encryption scheme")
        self._align = scheme is Protection.CENC
        headers: SliceHeaders
        try:
            if codec is Codec.H264:
                headers = AvcSliceHeaders(extradata)
            elif codec is Codec.HEVC:
                headers = HevcSliceHeaders(extradata)
            else:
                raise SampleEncryptionError(f"{codec.value} samples have no NAL subsample map")
        except CodecError as exc:
            raise SampleEncryptionError(f"{codec.value} decoder configuration: {exc}") from exc
        self._headers = headers
        self.nal_length_size = headers.nal_length_size
        self.unreadable_slices = 0
        self.unreadable_parameter_sets = 0

    def subsamples(self, sample: bytes) -> list[Subsample]:
        """The subsample list of ``sample``; the parts add up to its size.

        Raises :class:`SampleEncryptionError` when the sample is not a run of
        length-prefixed NAL units (the packet is broken, not its slices)."""
        size = self.nal_length_size
        out: list[Subsample] = []
        clear = 0
        pos = 0
        end = len(sample)
        while pos < end:
            if pos + size > end:
                raise SampleEncryptionError("sample truncated in a NAL length field")
            length = int.from_bytes(sample[pos : pos + size], "big")
            start = pos + size
            if length == 0 or start + length > end:
                raise SampleEncryptionError(f"NAL unit length {length} does not fit the sample")
            nal = sample[start : start + length]
            pos = start + length
            protected = self._protected(nal)
            clear += size + length - protected
            if protected:
                _append(out, clear, protected)
                clear = 0
        if clear or not out:
            _append(out, clear, 0)
        return out

    def _protected(self, nal: bytes) -> int:
        headers = self._headers
        if not headers.is_slice(nal):
            try:
                headers.observe(nal)
            except CodecError:
                # The slices that name it will be left clear and counted too.
                self.unreadable_parameter_sets += 1
            return 0
        try:
            header = headers.header_size(nal)
        except CodecError:
            self.unreadable_slices += 1
            return 0
        body = len(nal) - header
        if body < BLOCK:
            return 0
        return body - body % BLOCK if self._align else body


def _append(out: list[Subsample], clear: int, protected: int) -> None:
    while clear > MAX_CLEAR:
        out.append(Subsample(MAX_CLEAR, 0))
        clear -= MAX_CLEAR
    if protected > MAX_PROTECTED:
        raise SampleEncryptionError(f"{protected} protected bytes do not fit one subsample")
    out.append(Subsample(clear, protected))
