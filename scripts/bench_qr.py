#!/usr/bin/env python
"""Measure voucher QR rendering: milliseconds per PNG and SVG, in this process and through the service's pool.

    python scripts/bench_qr.py [--count 300]

Every image is of a fresh, genuine-looking 211-character voucher token (the renderer caches by token).
``scripts/bench --only qr`` reports the same figures beside zxing-cpp's C++ encoder (``qr_rows``).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import secrets
import time
from datetime import datetime, timezone
from typing import Callable

import qrcode
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from perks.core.clock import Clock
from perks.vouchers import qr
from perks.vouchers.keyring import KeyRing, SigningKey
from perks.vouchers.service import new_voucher_id
from perks.vouchers.qr_pool import WORKERS as QR_WORKERS, QrPool


def tokens(count: int) -> list[str]:
    """``count`` distinct vouchers signed with a throw-away key."""
    private_key = Ed25519PrivateKey.generate()
    key = SigningKey(secrets.token_urlsafe(6), private_key.public_key(), private_key, datetime.now(timezone.utc))
    ring = KeyRing(Clock(), [key])
    now = int(time.time())
    return [ring.sign(new_voucher_id(), now, now + 300)[0] for _ in range(count)]


def per_image_ms(render: Callable[[str], object], batch: list[str]) -> float:
    qr.modules.cache_clear()
    started = time.perf_counter()
    for token in batch:
        render(token)
    return (time.perf_counter() - started) * 1000 / len(batch)


def qrcode_defaults_png(token: str) -> bytes:
    """The ``qrcode`` package's own way (mask chosen by trial, its PIL drawing), for comparison."""
    buffer = io.BytesIO()
    qrcode.make(token, error_correction=qrcode.constants.ERROR_CORRECT_M).save(buffer)
    return buffer.getvalue()


async def through_pool(render: Callable[[str], object], batch: list[str]) -> tuple[float, float]:
    """(ms of wall time per image with every request in flight at once, mean ms a request waits)."""
    pool = QrPool()
    try:
        # Start the workers (and the fork server) before timing.
        await asyncio.gather(*(pool.render(render, token) for token in tokens(QR_WORKERS * 4)))

        async def one(token: str) -> float:
            started = time.perf_counter()
            await pool.render(render, token)
            return time.perf_counter() - started

        started = time.perf_counter()
        waits = await asyncio.gather(*(one(token) for token in batch))
        wall = time.perf_counter() - started
        return wall * 1000 / len(batch), sum(waits) * 1000 / len(waits)
    finally:
        pool.shutdown()


def zxing_png(token: str) -> bytes:
    """zxing-cpp's C++ encoder: the QR code at ECC M, its 8-pixel image, saved as PNG by Pillow as ours is."""
    import zxingcpp
    from PIL import Image

    barcode = zxingcpp.create_barcode(token, zxingcpp.BarcodeFormat.QRCode, ec_level="M")
    image = zxingcpp.write_barcode_to_image(barcode, scale=8)
    buffer = io.BytesIO()
    Image.frombuffer("L", (image.shape[1], image.shape[0]), memoryview(image), "raw", "L", 0, 1).convert("1").save(
        buffer, format="PNG")
    return buffer.getvalue()


def zxing_svg(token: str) -> str:
    """zxing-cpp's C++ encoder writing the SVG itself."""
    import zxingcpp

    barcode = zxingcpp.create_barcode(token, zxingcpp.BarcodeFormat.QRCode, ec_level="M")
    return zxingcpp.write_barcode_to_svg(barcode, scale=8)


def qr_rows(count: int) -> list[object]:
    """The benchmark's rows: ms per PNG and per SVG (matrix included), each against zxing-cpp's in this run."""
    from bench_report import Row

    batch = tokens(count)
    ours_png, ours_svg = per_image_ms(qr.render_png, batch), per_image_ms(qr.render_svg, batch)
    try:
        floor_png, floor_svg = per_image_ms(zxing_png, batch), per_image_ms(zxing_svg, batch)
    except ImportError:
        floor_png = floor_svg = None
    note = f"{count} fresh {len(batch[0])}-character tokens, one process, matrix included"
    return [
        Row("qr", "QR PNG ms", ours_png, "ms", floor_png, "zxing-cpp ms", ours_png / floor_png if floor_png else None,
            "≤ 6 ms", ours_png <= 6, note),
        Row("qr", "QR SVG ms", ours_svg, "ms", floor_svg, "zxing-cpp ms", ours_svg / floor_svg if floor_svg else None,
            "≤ 3 ms", ours_svg <= 3, note),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300, help="images per measurement (default 300)")
    args = parser.parse_args()
    batch = tokens(args.count)
    print(f"{args.count} tokens of {len(batch[0])} characters, QR version 10 at ECC M, mask {qr.MASK_PATTERN}")

    print("single process (ms per image):")
    print(f"  module matrix only        {per_image_ms(qr.modules, batch):7.2f}")
    print(f"  PNG                       {per_image_ms(qr.render_png, batch):7.2f}")
    print(f"  SVG                       {per_image_ms(qr.render_svg, batch):7.2f}")
    print(f"  PNG, qrcode defaults      {per_image_ms(qrcode_defaults_png, batch[: max(1, args.count // 5)]):7.2f}")
    try:
        import zxingcpp

        floor = per_image_ms(lambda token: zxingcpp.create_barcode(token, zxingcpp.BarcodeFormat.QRCode), batch)
        print(f"  zxing-cpp C++ matrix      {floor:7.2f}   (the floor)")
    except (ImportError, AttributeError):
        pass

    print(f"through the pool of {QR_WORKERS} worker processes, all requests at once:")
    for name, render in (("PNG", qr.render_png), ("SVG", qr.render_svg)):
        wall, wait = asyncio.run(through_pool(render, batch))
        print(f"  {name}  {wall:6.2f} ms of wall time per image ({1000 / wall:5.0f}/s); mean wait {wait:7.1f} ms")


if __name__ == "__main__":
    main()
