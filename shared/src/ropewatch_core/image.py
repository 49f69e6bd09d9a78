"""Image intake: base64 → bytes → HxWx3 uint8 RGB, EXIF-transposed, with size limits.

The fingerprints are what the validator later uses to find which request saw which frame, so they
are computed here once and reused there (`validator/frames.py`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from ropewatch_core.errors import InputError

MAX_BYTES = 24 * 1024 * 1024  # decoded bytes; 32 MiB of base64 body is ~24 MiB
MAX_PIXELS = 50_000_000  # ~ 8K x 6K; a larger frame is a decompression bomb for this function
# Every decode in ropewatch goes through open_image, which checks its own ``max_pixels`` on the header
# before decoding; Pillow's process-wide guess (89.5 MP, an error only above 179 MP) is switched off so
# the configured limit is the one enforced, above Pillow's as well as below it.
Image.MAX_IMAGE_PIXELS = None
_ADDRESS = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")  # Pillow quotes the BytesIO: no address to a client


class ImageError(InputError):
    """A request image that cannot be used; ``code`` is the client-facing error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Frame:
    rgb: np.ndarray
    format: str
    sha256: str
    pixel_sha256: str
    nbytes: int

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    def log_fields(self) -> dict:
        return {
            "sha256": self.sha256,
            "pixel_sha256": self.pixel_sha256,
            "width": self.width,
            "height": self.height,
            "format": self.format,
            "bytes": self.nbytes,
        }


def bytes_fingerprint(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pixel_fingerprint(rgb: np.ndarray) -> str:
    """sha256 of the decoded pixels: survives re-encoding of identical pixels (video frames as PNG).
    Hashes the array's buffer in place (no copy: a 50 MP frame would cost another 150 MB)."""
    buffer = np.ascontiguousarray(rgb, dtype=np.uint8).data
    return hashlib.sha256(buffer.cast("B")).hexdigest()


def decode_base64(text: object, max_bytes: int = MAX_BYTES) -> bytes:
    if text is None:
        raise ImageError("image_missing", "the request has no 'image' field")
    if not isinstance(text, str):
        raise ImageError("image_not_base64", "'image' must be a base64 string")
    if len(text) * 3 // 4 > max_bytes:
        raise ImageError("image_too_large", f"'image' is over the {max_bytes} byte limit")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError("image_not_base64", f"'image' is not valid base64: {exc}") from None
    if not data:
        raise ImageError("image_empty", "'image' is empty")
    return data


def _to_rgb(im: Image.Image) -> np.ndarray:
    """Any Pillow mode → RGB uint8; 16/32-bit integer grey is scaled, not clipped, to 8 bits."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        grey = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or grey.max(initial=0) > 255 else 255.0
        grey8 = np.clip(np.rint(grey * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(grey8[:, :, None], 3, axis=2)
    if im.mode == "F":
        grey8 = np.clip(np.rint(np.asarray(im, dtype=np.float64)), 0, 255).astype(np.uint8)
        return np.repeat(grey8[:, :, None], 3, axis=2)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    rgb = im if im.mode == "RGB" else im.convert("RGB")  # convert() copies even RGB: skip it
    return np.array(rgb, dtype=np.uint8)  # a writable copy: torch refuses read-only arrays


def open_image(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, str]:
    """Decoded RGB pixels and the container format; the pixel limit is checked before decoding."""
    if not data:
        raise ImageError("image_empty", "the image is empty")
    try:
        im: Image.Image = Image.open(io.BytesIO(data))  # reads the header only
        width, height = im.size
        if width * height > max_pixels:
            raise ImageError(
                "image_too_large",
                f"image is {width}x{height} = {width * height} pixels, over the {max_pixels} limit",
            )
        fmt = im.format or "unknown"
        im = ImageOps.exif_transpose(im)
        rgb = _to_rgb(im)
    except ImageError:
        raise
    except Image.UnidentifiedImageError:
        raise ImageError("image_invalid", "not a decodable image: unknown image format") from None
    except (OSError, ValueError, SyntaxError, MemoryError) as exc:
        reason = _ADDRESS.sub("the image", " ".join(str(exc).split()))[:200]
        raise ImageError("image_invalid", f"not a decodable image: {reason}") from None
    return rgb, fmt


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    return open_image(data, max_pixels)[0]


def load_frame(data: bytes, max_pixels: int = MAX_PIXELS) -> Frame:
    rgb, fmt = open_image(data, max_pixels)
    return Frame(
        rgb=rgb,
        format=fmt,
        sha256=bytes_fingerprint(data),
        pixel_sha256=pixel_fingerprint(rgb),
        nbytes=len(data),
    )
