"""QR images of vouchers: they decode back to the exact token, only for the voucher's own client, never cached."""

from __future__ import annotations

import io
import multiprocessing
import os
import re
import signal
import xml.etree.ElementTree as ElementTree

import pytest
import qrcode
import zxingcpp
from PIL import Image, ImageDraw
from qrcode.constants import ERROR_CORRECT_M

from perks.vouchers import qr
from perks.vouchers.appkeys import QR_POOL
from perks.vouchers.qr_pool import QrPool

SVG_NS = "{http://www.w3.org/2000/svg}"
# A token as long as the contract allows: 213 characters.
LONGEST_TOKEN = "eyJhbGciOiJFZERTQSIsImtpZCI6IkFCQ0RFRkdIIn0." + "x" * 82 + "." + "y" * 86


def decode(image: Image.Image) -> zxingcpp.Barcode:
    [barcode] = zxingcpp.read_barcodes(image)
    return barcode


def svg_to_image(svg: str) -> Image.Image:
    """Rasterise the renderer's SVG (one path of ``M x y h w v1 h-w z`` runs) to check what it draws."""
    root = ElementTree.fromstring(svg)
    assert root.tag == f"{SVG_NS}svg"
    size = int(root.attrib["viewBox"].split()[2])
    [path] = root.iter(f"{SVG_NS}path")
    scale = 8
    image = Image.new("L", (size * scale, size * scale), 255)
    draw = ImageDraw.Draw(image)
    runs = re.findall(r"M(\d+) (\d+)h(\d+)v1h-(\d+)z", path.attrib["d"])
    assert "".join(f"M{x} {y}h{w}v1h-{w2}z" for x, y, w, w2 in runs) == path.attrib["d"]
    for x, y, width, _ in runs:
        left, top = int(x) * scale, int(y) * scale
        draw.rectangle([left, top, left + int(width) * scale - 1, top + scale - 1], fill=0)
    return image


def test_the_longest_token_fits_version_10_at_error_correction_m():
    assert len(LONGEST_TOKEN) == 213
    modules = qr.modules(LONGEST_TOKEN)
    assert len(modules) == 57 + 2 * qr.BORDER_MODULES
    barcode = decode(Image.open(io.BytesIO(qr.render_png(LONGEST_TOKEN))))
    assert barcode.text == LONGEST_TOKEN
    assert (barcode.extra["Version"], barcode.extra["ECLevel"]) == ("10", "M")
    assert barcode.extra["DataMask"] == qr.MASK_PATTERN


def test_a_longer_token_is_refused():
    with pytest.raises(ValueError):
        qr.modules(LONGEST_TOKEN + "z")


@pytest.mark.parametrize("length", [1, 14, 15, 100, 180, 181, 211, 212, 213])
def test_version_table_agrees_with_qrcode_fitting(length):
    code = qrcode.QRCode(error_correction=ERROR_CORRECT_M)
    code.add_data(b"x" * length, optimize=0)
    code.make(fit=True)
    assert qr.version_for(length) == code.version


def test_svg_draws_the_same_code():
    assert decode(svg_to_image(qr.render_svg(LONGEST_TOKEN))).text == LONGEST_TOKEN


async def _voucher(api) -> tuple[str, dict]:
    _, token, perk = await api.entitled_client()
    return token, await api.voucher(token, perk["code"])


async def test_png_decodes_to_the_exact_token(api, client):
    token, voucher = await _voucher(api)
    async with client.get(voucher["qr_png_url"], headers={"Authorization": f"Bearer {token}"}) as response:
        assert response.status == 200
        assert response.content_type == "image/png"
        assert response.headers["Cache-Control"] == "no-store"
        png = await response.read()
    barcode = decode(Image.open(io.BytesIO(png)))
    assert barcode.text == voucher["token"]
    assert int(barcode.extra["Version"]) <= 10 and barcode.extra["ECLevel"] == "M"
    assert isinstance(client.app[QR_POOL], QrPool)


async def test_svg_is_valid_xml_of_the_exact_token(api, client):
    token, voucher = await _voucher(api)
    async with client.get(voucher["qr_svg_url"], headers={"Authorization": f"Bearer {token}"}) as response:
        assert response.status == 200
        assert response.content_type == "image/svg+xml"
        assert response.headers["Cache-Control"] == "no-store"
        svg = await response.text()
    assert decode(svg_to_image(svg)).text == voucher["token"]


async def test_a_renderer_that_died_is_replaced_and_the_image_still_drawn(api, client):
    token, voucher = await _voucher(api)
    headers = {"Authorization": f"Bearer {token}"}
    async with client.get(voucher["qr_png_url"], headers=headers) as response:
        assert response.status == 200
    renderers = [child for child in multiprocessing.active_children() if child.name.startswith("SpawnProcess")]
    assert renderers, "no rendering process was started"
    for renderer in renderers:  # as the out-of-memory killer would
        os.kill(renderer.pid, signal.SIGKILL)
        renderer.join(5)
    for _ in range(3):
        async with client.get(voucher["qr_png_url"], headers=headers) as response:
            assert response.status == 200
            assert decode(Image.open(io.BytesIO(await response.read()))).text == voucher["token"]


async def test_another_clients_voucher_is_not_found(api):
    _, voucher = await _voucher(api)
    other = await api.new_client()
    other_token = await api.client_session(other["id"])
    for url in (voucher["qr_png_url"], voucher["qr_svg_url"]):
        status, body = await api.call("GET", url, other_token)
        assert (status, body["error"]["code"]) == (404, "not_found"), url


# A NUL byte ("%00") is 400 at the edge: tests/test_hostile_input.py.
@pytest.mark.parametrize("voucher_id", ["AAAAAAAAAAAAAAAA", "short", "x" * 300, "..%2F..%2Fetc"])
async def test_unknown_or_malformed_voucher_is_not_found(api, voucher_id):
    client = await api.new_client()
    token = await api.client_session(client["id"])
    for kind in ("png", "svg"):
        status, body = await api.call("GET", f"/api/v1/me/vouchers/{voucher_id}/qr.{kind}", token)
        assert status == 404, (voucher_id, kind, body)


async def test_qr_images_are_for_the_client_only(api):
    _, voucher = await _voucher(api)
    for url in (voucher["qr_png_url"], voucher["qr_svg_url"]):
        assert (await api.call("GET", url))[0] == 401
        for role in ("admin", "operator", "auditor"):
            status, body = await api.call("GET", url, await api.staff(role))
            assert (status, body["error"]["code"]) == (403, "forbidden"), (url, role)
