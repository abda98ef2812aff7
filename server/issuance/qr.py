"""The verification QR code, fast: the exact symbol segno makes with `make_qr(data, error="m", mask=2,
boost_error=False)` for data that fits version 3-M in alphanumeric mode (every verification URL
does), built from tables computed once; anything else is left to segno.

segno spends about 2 ms a symbol in pure Python (segments, bit buffers, a generic placement loop);
here the function patterns, the zigzag order of the data modules and the mask are fixed, so a
symbol is 44 data codewords, 26 Reed-Solomon codewords (a table look-up each), one xor with the
mask and one C-level gather of the image's pixels: about a tenth of segno's time.
`tests/issuance/test_issuance_pdf.py` compares the two module for module.
"""

from __future__ import annotations

import operator
import threading

import segno

VERSION = 3
SIZE = 17 + 4 * VERSION  # 29 modules
DATA_CODEWORDS = 44  # version 3-M: one block of 70 codewords, 44 data + 26 error correction
EC_CODEWORDS = 26
REMAINDER_BITS = 7
ALPHANUMERIC = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_VALUE = {ch: i for i, ch in enumerate(ALPHANUMERIC)}
# version 2-M holds 38 alphanumeric characters, 3-M 61: segno picks version 3 for 39..61
MIN_LENGTH, MAX_LENGTH = 39, 61

# GF(256) with the QR polynomial x^8 + x^4 + x^3 + x^2 + 1
_EXP = [0] * 512
_LOG = [0] * 256
_x = 1
for _i in range(255):
    _EXP[_i] = _x
    _LOG[_x] = _i
    _x <<= 1
    if _x & 0x100:
        _x ^= 0x11D
for _i in range(255, 512):
    _EXP[_i] = _EXP[_i - 255]


def _generator(degree: int) -> list[int]:
    poly = [1]
    for i in range(degree):
        # multiply by (x - a^i)
        nxt = poly + [0]
        for j, coef in enumerate(poly):
            if coef:
                nxt[j + 1] ^= _EXP[_LOG[coef] + i]
        poly = nxt
    return poly


_GEN_LOGS = [_LOG[c] for c in _generator(EC_CODEWORDS)[1:]]


# The remainder's update for each leading factor, as a 26-byte integer: the division by the
# generator polynomial then takes one table look-up, a shift and an xor per data codeword.
_EC_BITS = EC_CODEWORDS * 8
_EC_MASK = (1 << _EC_BITS) - 1
_EC_TABLE = [0] + [int.from_bytes(bytes(_EXP[_LOG[f] + g] for g in _GEN_LOGS), "big") for f in range(1, 256)]


def _error_correction(data: bytes) -> bytes:
    """The Reed-Solomon codewords of `data` (one block)."""
    remainder = 0
    top = _EC_BITS - 8
    for byte in data:
        remainder = ((remainder << 8) & _EC_MASK) ^ _EC_TABLE[byte ^ (remainder >> top)]
    return remainder.to_bytes(EC_CODEWORDS, "big")


def _function_modules() -> set[tuple[int, int]]:
    taken: set[tuple[int, int]] = set()
    for r0, c0 in ((0, 0), (0, SIZE - 7), (SIZE - 7, 0)):  # finders with their separators
        for r in range(r0 - 1, r0 + 8):
            for c in range(c0 - 1, c0 + 8):
                if 0 <= r < SIZE and 0 <= c < SIZE:
                    taken.add((r, c))
    for i in range(SIZE):  # timing patterns
        taken.add((6, i))
        taken.add((i, 6))
    for r in range(SIZE - 9, SIZE - 4):  # the one alignment pattern of version 3, centred at (22, 22)
        for c in range(SIZE - 9, SIZE - 4):
            taken.add((r, c))
    for i in range(9):  # format information around the top-left finder
        taken.add((8, i))
        taken.add((i, 8))
    for i in range(8):  # ... and its copy beside the other two finders (with the dark module)
        taken.add((8, SIZE - 1 - i))
        taken.add((SIZE - 1 - i, 8))
    return taken


def _data_positions(taken: set[tuple[int, int]]) -> list[tuple[int, int]]:
    """Data module positions in placement order: two-column strips from the right, up and down."""
    order = []
    col, upward = SIZE - 1, True
    while col > 0:
        if col == 6:  # the vertical timing pattern is skipped as a whole column
            col -= 1
        rows = range(SIZE - 1, -1, -1) if upward else range(SIZE)
        for r in rows:
            for c in (col, col - 1):
                if (r, c) not in taken:
                    order.append((r, c))
        col -= 2
        upward = not upward
    return order


class _Layout:
    """The tables: for each pixel of the image (quiet zone included) where its value comes from: a
    data bit's position in the masked bit string, or a fixed light or dark value (the quiet zone,
    and the function patterns and format information for M and mask 2, taken from a symbol segno
    made). Mask 2 inverts the data modules whose column is a multiple of 3."""

    def __init__(self, quiet: int) -> None:
        taken = _function_modules()
        positions = _data_positions(taken)
        bits = (DATA_CODEWORDS + EC_CODEWORDS) * 8 + REMAINDER_BITS
        assert len(positions) == bits
        reference = segno.make_qr("HTTPS://VERIFY.ONESTOP.EXAMPLE/C/AAAA-AAAA-AAAA-AAAA", error="m", mask=2,
                                  boost_error=False)
        assert reference.version == VERSION and reference.error == "M" and reference.mask == 2
        matrix = reference.matrix
        self.bits = bits
        self.mask = int("".join("1" if c % 3 == 0 else "0" for r, c in positions), 2)
        light, dark = bits, bits + 1  # indexes of the two fixed values appended to the bit string
        where = {pos: k for k, pos in enumerate(positions)}
        self.side = SIZE + 2 * quiet
        order = []
        for y in range(self.side):
            for x in range(self.side):
                r, c = y - quiet, x - quiet
                if not (0 <= r < SIZE and 0 <= c < SIZE):
                    order.append(light)
                elif (r, c) in taken:
                    order.append(dark if matrix[r][c] else light)
                else:
                    order.append(where[(r, c)])
        self.pick = operator.itemgetter(*order)


_layouts: dict[int, _Layout] = {}
_layout_lock = threading.Lock()
# '1' (dark) -> 0 (black), '0' (light) -> 255 (white)
_PIXELS = bytes.maketrans(b"01", b"\xff\x00")


def _codewords(data: str) -> bytes | None:
    acc, length = 0, 0
    for value, width in _segment(data):
        acc, length = (acc << width) | value, length + width
    capacity = DATA_CODEWORDS * 8
    terminator = min(4, capacity - length)
    acc, length = acc << terminator, length + terminator
    # segno pads to the next codeword boundary with 1 to 8 zero bits (a whole zero codeword when the
    # terminator ends on one); the same symbol as segno's is made here, so the same is done.
    padding = 8 - length % 8
    acc, length = acc << padding, length + padding
    if length > capacity:
        return None
    filler = bytes((0xEC, 0x11) * DATA_CODEWORDS)[:DATA_CODEWORDS - length // 8]
    return acc.to_bytes(length // 8, "big") + filler


def _segment(data: str):
    yield 0b0010, 4  # alphanumeric mode
    yield len(data), 9  # character count (versions 1 to 9)
    for i in range(0, len(data) - 1, 2):
        yield _VALUE[data[i]] * 45 + _VALUE[data[i + 1]], 11
    if len(data) % 2:
        yield _VALUE[data[-1]], 6


def fits(data: str) -> bool:
    """Whether `data` makes a version 3-M alphanumeric symbol here (else segno makes it)."""
    return (MIN_LENGTH <= len(data) <= MAX_LENGTH and all(ch in _VALUE for ch in data)
            and _codewords(data) is not None)


def _layout(quiet: int) -> _Layout:
    layout = _layouts.get(quiet)
    if layout is None:
        with _layout_lock:
            layout = _layouts.setdefault(quiet, _Layout(quiet))
    return layout


def image(data: str, quiet: int = 4) -> tuple[int, bytes]:
    """The symbol as an 8-bit grey image with `quiet` light modules around it, one pixel per module
    (0 dark, 255 light): (side, pixels row by row)."""
    fast = MIN_LENGTH <= len(data) <= MAX_LENGTH and all(ch in _VALUE for ch in data)
    codewords = _codewords(data) if fast else None
    if codewords is None:
        rows = segno.make_qr(data, error="m", mask=2, boost_error=False).matrix
        side = len(rows) + 2 * quiet
        blank = b"\xff" * side
        pad = b"\xff" * quiet
        body = b"".join(pad + bytes(0 if dark else 255 for dark in row) + pad for row in rows)
        return side, blank * quiet + body + blank * quiet
    layout = _layout(quiet)
    message = codewords + _error_correction(codewords)
    masked = (int.from_bytes(message, "big") << REMAINDER_BITS) ^ layout.mask
    source = (format(masked, f"0{layout.bits}b") + "01").encode("ascii").translate(_PIXELS)
    return layout.side, bytes(layout.pick(source))


def modules(data: str) -> list[list[bool]]:
    """The symbol's modules (True = dark), without the quiet zone."""
    side, pixels = image(data, quiet=0)
    return [[pixels[r * side + c] == 0 for c in range(side)] for r in range(side)]
