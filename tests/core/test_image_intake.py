"""Image intake: EXIF orientation, odd modes, size limits, fingerprints.

Independent oracles: numpy, hashlib.
"""

from __future__ import annotations

import base64
import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from ropewatch_core.image import (
    MAX_PIXELS,
    ImageError,
    bytes_fingerprint,
    decode_base64,
    decode_image,
    load_frame,
    pixel_fingerprint,
)


def encode(im: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    out = io.BytesIO()
    im.save(out, format=fmt, **kwargs)
    return out.getvalue()


def test_exif_orientation_is_applied():
    pixels = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    rgb = decode_image(encode(Image.fromarray(pixels), exif=exif))
    assert rgb.shape == (3, 2, 3)
    np.testing.assert_array_equal(rgb, np.rot90(pixels, k=-1))


def test_grayscale_rgba_palette_cmyk_become_rgb():
    grey = np.array([[0, 128], [200, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(
        decode_image(encode(Image.fromarray(grey, "L"))), np.repeat(grey[:, :, None], 3, 2)
    )
    rgba = np.array([[[10, 20, 30, 0], [40, 50, 60, 255]]], dtype=np.uint8)
    np.testing.assert_array_equal(decode_image(encode(Image.fromarray(rgba, "RGBA"))), rgba[:, :, :3])
    pal = Image.new("P", (2, 1))
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putpixel((1, 0), 1)
    np.testing.assert_array_equal(decode_image(encode(pal)), [[[255, 0, 0], [0, 0, 255]]])
    cmyk = decode_image(encode(Image.new("CMYK", (3, 2), (0, 0, 0, 0)), "JPEG"))
    assert cmyk.shape == (2, 3, 3) and cmyk.dtype == np.uint8


def test_sixteen_bit_grey_is_scaled_not_clipped():
    grey16 = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    rgb = decode_image(encode(Image.fromarray(grey16)))
    np.testing.assert_array_equal(rgb[:, :, 0], [[0, 100, 255]])
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 3, 3)


def test_pixel_limit_rejects_decompression_bombs_before_decoding():
    bomb = encode(Image.new("1", (8000, 7000)))  # 56 MP in a few kB
    assert len(bomb) < 100_000 and MAX_PIXELS < 8000 * 7000
    with pytest.raises(ImageError) as err:
        decode_image(bomb)
    assert err.value.code == "image_too_large" and "8000x7000" in str(err.value)
    with pytest.raises(ImageError, match="over the 100 limit"):
        decode_image(encode(Image.new("RGB", (20, 20))), max_pixels=100)


def test_max_pixels_is_the_one_limit_above_pillows_own_too():
    """Issue 11.15: Pillow refused anything over 89,478,485 px with its own message, whatever the limit."""
    big = encode(Image.new("1", (9500, 9500)))  # 90.25 MP: over Pillow's limit, under ours
    assert Image.MAX_IMAGE_PIXELS is None and 9500 * 9500 > 89_478_485
    rgb = decode_image(big, max_pixels=100_000_000)
    assert rgb.shape == (9500, 9500, 3)
    del rgb
    huge = encode(Image.new("1", (20000, 9000)))  # 180 MP: Pillow's hard error started at 2 x 89.5 MP
    with pytest.raises(ImageError) as err:
        decode_image(huge, max_pixels=100_000_000)
    assert str(err.value) == "image is 20000x9000 = 180000000 pixels, over the 100000000 limit"


def test_undecodable_bytes_name_no_memory_address():
    with pytest.raises(ImageError) as err:
        load_frame(b"GIF89a garbage bytes here")
    assert err.value.code == "image_invalid" and "0x" not in str(err.value)
    assert str(err.value) == "not a decodable image: unknown image format"


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (None, "image_missing"),
        (12, "image_not_base64"),
        ("@@not base64@@", "image_not_base64"),
        ("", "image_empty"),
    ],
)
def test_base64_errors_have_codes(value, code):
    with pytest.raises(ImageError) as err:
        decode_base64(value)
    assert err.value.code == code


def test_base64_size_limit_and_undecodable_bytes():
    with pytest.raises(ImageError) as err:
        decode_base64(base64.b64encode(b"x" * 2000).decode(), max_bytes=1000)
    assert err.value.code == "image_too_large"
    with pytest.raises(ImageError) as err:
        load_frame(b"hello, not an image")
    assert err.value.code == "image_invalid"


def test_fingerprints():
    pixels = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    png, bmp = encode(Image.fromarray(pixels)), encode(Image.fromarray(pixels), "BMP")
    frame = load_frame(png)
    assert frame.sha256 == hashlib.sha256(png).hexdigest() == bytes_fingerprint(png)
    assert frame.pixel_sha256 == hashlib.sha256(pixels.tobytes()).hexdigest() == pixel_fingerprint(pixels)
    assert load_frame(bmp).pixel_sha256 == frame.pixel_sha256 and load_frame(bmp).sha256 != frame.sha256
    assert frame.log_fields() == {
        "sha256": frame.sha256,
        "pixel_sha256": frame.pixel_sha256,
        "width": 7,
        "height": 5,
        "format": "PNG",
        "bytes": len(png),
    }
