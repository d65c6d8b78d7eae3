"""Bit-level reading shared by the parameter-set and record parsers.

Parameter sets are written with emulation prevention (``00 00 03``) and with
Exp-Golomb codes; :class:`BitReader` reads the RBSP once emulation prevention
has been removed by :func:`unescape_rbsp`. Every read is bounds-checked and a
short read raises :class:`CodecError`, so hostile input can never surface as
``IndexError``.
"""

from __future__ import annotations

from engine.codecs.errors import CodecError

#: Longest Exp-Golomb prefix accepted: values in parameter sets fit in 32 bits.
MAX_EXP_GOLOMB_ZEROS = 31


def unescape_rbsp(data: bytes) -> bytes:
    """Remove emulation-prevention bytes (the ``03`` in ``00 00 03``)."""
    if b"\x00\x00\x03" not in data:
        return data
    out = bytearray()
    zeros = 0
    for byte in data:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def escape_rbsp(data: bytes) -> bytes:
    """Insert emulation-prevention bytes so that ``data`` contains no start
    code prefix (the inverse of :func:`unescape_rbsp`)."""
    out = bytearray()
    zeros = 0
    for byte in data:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


class BitReader:
    """Reads big-endian bit fields from a byte string, most significant bit
    first, as the H.264/HEVC/AV1 syntax tables are written."""

    __slots__ = ("_data", "_end", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0
        self._end = len(data) * 8

    @property
    def position(self) -> int:
        """Bits read (or skipped) so far."""
        return self._pos

    @property
    def bits_left(self) -> int:
        return self._end - self._pos

    def u(self, n: int) -> int:
        """Read an unsigned ``n``-bit field."""
        if n == 0:
            return 0
        if self._pos + n > self._end:
            raise CodecError(f"bitstream truncated: needed {n} bits, {self.bits_left} left")
        pos = self._pos
        end = pos + n
        last = (end + 7) >> 3
        chunk = int.from_bytes(self._data[pos >> 3 : last], "big")
        self._pos = end
        return (chunk >> ((last << 3) - end)) & ((1 << n) - 1)

    def flag(self) -> bool:
        return self.u(1) == 1

    def skip(self, n: int) -> None:
        if self._pos + n > self._end:
            raise CodecError(f"bitstream truncated: cannot skip {n} bits, {self.bits_left} left")
        self._pos += n

    def ue(self) -> int:
        """Read an unsigned Exp-Golomb code, ``ue(v)``."""
        # Fast path: the whole code word lies in the next 9 bytes (a code
        # of up to 31 leading zeros always does unless the data ends).
        first = self._pos >> 3
        window_bytes = self._data[first : first + 9]
        bits = len(window_bytes) * 8 - (self._pos & 7)
        window = int.from_bytes(window_bytes, "big") & ((1 << bits) - 1)
        zeros = bits - window.bit_length()
        size = 2 * zeros + 1
        if window and zeros <= MAX_EXP_GOLOMB_ZEROS and size <= bits:
            self._pos += size
            return (window >> (bits - size)) - 1
        return self._ue_bit_by_bit()

    def _ue_bit_by_bit(self) -> int:
        """``ue(v)`` read one bit at a time: the errors of a truncated or
        overlong code."""
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > MAX_EXP_GOLOMB_ZEROS:
                raise CodecError("Exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        """Read a signed Exp-Golomb code, ``se(v)``."""
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)

    def uvlc(self) -> int:
        """Read AV1's ``uvlc()`` code (Exp-Golomb-like, capped at 32 bits)."""
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros >= 32:
                raise CodecError("uvlc code longer than 32 bits")
        return (1 << zeros) - 1 + self.u(zeros)
