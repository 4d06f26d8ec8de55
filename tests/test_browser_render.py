"""A real Chromium must agree with the PNG headers on embedded figures and flag a broken one.

This guards the browser check itself (``tests/browser.py``), so that a report test relying on it
cannot pass because the probe silently reported nothing or reported sizes for undecodable data.
"""
from __future__ import annotations

import base64
import io
import struct
from pathlib import Path

import pytest

from browser import find_chromium, render_images

if find_chromium() is None:
    pytest.skip("Chromium not installed: apt-get install chromium", allow_module_level=True)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(data: bytes) -> tuple[int, int]:
    # IHDR is always the first chunk: signature (8), length (4), type (4), then width, height.
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _figure_png(width_in: float, height_in: float, dpi: int) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width_in, height_in), dpi=dpi)
    ax.plot([0, 1, 2], [0, 1, 0])
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def _img(alt: str, data: bytes) -> str:
    return '<img alt="%s" src="data:image/png;base64,%s">' % (alt, base64.b64encode(data).decode())


def test_render_images_sizes_broken_and_screenshot(tmp_path: Path):
    # Different aspect ratios so a swapped width/height cannot pass.
    wide = _figure_png(2.0, 1.0, 60)
    tall = _figure_png(1.0, 1.5, 50)
    page = tmp_path / "report.html"
    page.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>t</title></head><body>"
        "<h1>report</h1><table><tr><td>a</td><td>1</td></tr></table>"
        + _img("wide", wide)
        + _img("tall", tall)
        + '<img src="data:image/png;base64,AAAA">'
        + "</body></html>",
        encoding="utf-8",
    )
    shot = tmp_path / "shots" / "page.png"

    sizes = render_images(page, screenshot=shot, timeout_s=60)

    assert len(sizes) == 3
    assert sizes[0] == ("wide", *_png_size(wide))
    assert sizes[1] == ("tall", *_png_size(tall))
    assert _png_size(wide) == (120, 60) and _png_size(tall) == (50, 75)
    label, width, height = sizes[2]
    assert label.startswith("data:image/png;base64,AAAA")
    assert (width, height) == (0, 0)

    data = shot.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert _png_size(data) == (1280, 2400)
