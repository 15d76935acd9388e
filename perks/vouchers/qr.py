"""QR images of a voucher token: error correction M, version 10 at most, one fixed mask pattern.

Pure CPU work: the application runs these functions in its worker processes (``perks.vouchers.qr_pool``), never
on the event loop.
"""

from __future__ import annotations

import functools
import io

import qrcode
from PIL import Image
from qrcode.constants import ERROR_CORRECT_M

MAX_VERSION = 10
# How many bytes versions 1..10 hold at error correction M (ISO/IEC 18004, table 7). Choosing the version from
# this table, rather than letting qrcode try versions by encoding the data again and again, halves the cost.
BYTE_CAPACITY_M = (14, 26, 42, 62, 84, 106, 122, 152, 180, 213)
# A fixed mask skips qrcode's trial of all eight (most of the cost). Any mask scans; over random version-10
# vouchers, pattern 2 gave the lowest average ISO 18004 penalty score.
MASK_PATTERN = 2
BORDER_MODULES = 4
# Eight pixels a module.
PNG_MODULE_PIXELS = 8
SVG_MODULE_PIXELS = 8


def version_for(length: int) -> int:
    """The smallest QR version that holds ``length`` bytes at error correction M (10 at most)."""
    for version, capacity in enumerate(BYTE_CAPACITY_M, start=1):
        if length <= capacity:
            return version
    raise ValueError(f"{length} bytes do not fit a version-{MAX_VERSION} QR code at error correction M")


@functools.lru_cache(maxsize=256)
def modules(token: str) -> tuple[tuple[bool, ...], ...]:
    """The QR code's dark (True) and light modules, quiet zone included, for ``token`` in byte mode."""
    data = token.encode("ascii")
    code = qrcode.QRCode(
        version=version_for(len(data)), error_correction=ERROR_CORRECT_M, border=BORDER_MODULES,
        mask_pattern=MASK_PATTERN,
    )
    # One byte-mode segment, so that the table above gives the size.
    code.add_data(data, optimize=0)
    code.make(fit=False)
    return tuple(tuple(row) for row in code.get_matrix())


def render_png(token: str) -> bytes:
    """A black-on-white, 1-bit PNG of the QR code of ``token``, eight pixels a module."""
    rows = modules(token)
    size = len(rows)
    # One byte a module, then Pillow's nearest-neighbour scaling in C: faster than building every pixel row here.
    small = Image.frombytes("L", (size, size), bytes(0x00 if dark else 0xFF for row in rows for dark in row))
    image = small.convert("1").resize((size * PNG_MODULE_PIXELS, size * PNG_MODULE_PIXELS), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def render_svg(token: str) -> str:
    """An SVG document of the QR code of ``token``: one path, a horizontal run of dark modules per subpath."""
    rows = modules(token)
    size = len(rows)
    path = []
    for y, row in enumerate(rows):
        x = 0
        while x < size:
            if not row[x]:
                x += 1
                continue
            start = x
            while x < size and row[x]:
                x += 1
            path.append(f"M{start} {y}h{x - start}v1h-{x - start}z")
    pixels = size * SVG_MODULE_PIXELS
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{pixels}" height="{pixels}" '
        f'viewBox="0 0 {size} {size}" shape-rendering="crispEdges">'
        f'<rect width="{size}" height="{size}" fill="#fff"/>'
        f'<path fill="#000" d="{"".join(path)}"/></svg>\n'
    )
