"""Driving Debian's Chromium with Playwright: a fake camera that shows a voucher's QR code, phone-sized pages,
screenshots kept as test artifacts. Without Chromium the browser tests skip, except under CI, where they fail."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from PIL import Image

CHROMIUM = Path(os.environ.get("PERKS_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "portal"
PHONE = {"width": 360, "height": 740}
DESK = {"width": 1280, "height": 800}
TABLET = {"width": 820, "height": 1180}
FRAME_WIDTH, FRAME_HEIGHT = 640, 480
# Leave a margin around the code, as a cashier holding a phone up to the camera would.
MAX_CODE_SIDE = 440
FRAMES = 10
BASE_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CAMERA_ARGS = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]


def require_chromium() -> None:
    """Skip (locally) or fail (under CI) when Chromium or Playwright is missing."""
    problem = None
    if not CHROMIUM.exists():
        problem = f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)"
    else:
        try:
            import playwright.async_api  # noqa: F401
        except ImportError:
            problem = "the Python package playwright is not installed (pip install playwright)"
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"browser tests must run under CI: {problem}", pytrace=False)
    pytest.skip(problem)


def camera_frame(png: bytes) -> bytes:
    """One 640x480 luma frame: the QR code (grey-scale, modules kept square) centred on white."""
    code = Image.open(io.BytesIO(png)).convert("L")
    side = code.width
    if side > MAX_CODE_SIDE:
        # Scale by k/8 so that 8-pixel modules stay whole pixels.
        eighths = max(1, MAX_CODE_SIDE * 8 // side)
        side = side * eighths // 8
        code = code.resize((side, side), Image.Resampling.NEAREST)
    frame = Image.new("L", (FRAME_WIDTH, FRAME_HEIGHT), 255)
    frame.paste(code, ((FRAME_WIDTH - side) // 2, (FRAME_HEIGHT - code.height) // 2))
    return frame.tobytes()


def write_y4m(png: bytes, path: Path, frames: int = FRAMES) -> Path:
    """A YUV 4:2:0 video of ``frames`` identical frames showing the QR code ``png``, for Chromium's fake camera."""
    luma = camera_frame(png)
    chroma = bytes([128]) * (FRAME_WIDTH // 2 * FRAME_HEIGHT // 2)
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{FRAME_WIDTH} H{FRAME_HEIGHT} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            out.write(b"FRAME\n" + luma + chroma + chroma)
    return path


def blank_png() -> bytes:
    """A white picture: a camera that sees no code."""
    buffer = io.BytesIO()
    Image.new("L", (64, 64), 255).save(buffer, format="PNG")
    return buffer.getvalue()


class Browsers:
    """Chromium instances for one test: each launched with its own fake camera; all closed at the end."""

    def __init__(self, playwright: Any, tmp_path: Path, test_name: str) -> None:
        self.playwright = playwright
        self.tmp_path = tmp_path
        self.test_name = re.sub(r"[^a-z0-9_]+", "_", test_name.lower())
        self.opened: list[Any] = []
        self.shots = 0
        self.artifacts = ARTIFACTS

    async def phone(self, camera_png: bytes | None = None, **context: Any) -> Any:
        """A new page, 360x740 like a phone, in a browser whose camera shows ``camera_png`` (default: nothing)."""
        video = write_y4m(camera_png or blank_png(), self.tmp_path / f"camera{len(self.opened)}.y4m")
        browser = await self.playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[*BASE_ARGS, *CAMERA_ARGS, f"--use-file-for-fake-video-capture={video}"],
        )
        self.opened.append(browser)
        page_context = await browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True,
                                                 has_touch=True, locale="zh-CN", **context)
        page = await page_context.new_page()
        page.set_default_timeout(15_000)
        return page

    async def desk(self, viewport: dict[str, int] = DESK, locale: str = "zh-CN", **context: Any) -> Any:
        """A new page in a new browser without a camera, 1280x800 like a bank's desk screen (or ``viewport``)."""
        browser = await self.playwright.chromium.launch(executable_path=str(CHROMIUM), args=BASE_ARGS)
        self.opened.append(browser)
        page_context = await browser.new_context(viewport=viewport, locale=locale, accept_downloads=True, **context)
        page = await page_context.new_page()
        page.set_default_timeout(15_000)
        return page

    async def shot(self, page: Any, step: str) -> Path:
        """Save a screenshot of ``page`` as test-artifacts/<area>/<test>-<n>-<step>.png (``self.artifacts``)."""
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self.shots += 1
        path = self.artifacts / f"{self.test_name}-{self.shots:02d}-{step}.png"
        await page.screenshot(path=str(path), full_page=True)
        return path

    async def close(self) -> None:
        for browser in self.opened:
            await browser.close()


async def browsers_for(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Browsers]:
    """The body of a ``browsers`` fixture: Playwright started, Chromium required, everything closed after."""
    require_chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browsers = Browsers(playwright, tmp_path, request.node.name)
        try:
            yield browsers
        finally:
            await browsers.close()
