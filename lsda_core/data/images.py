"""Reading image files: pixels as (H, W, 3) uint8 RGB, or only the size from the header.

Every failure is a `DataError` whose message starts with the file's path, so a bad file in
a real dataset is named in one line instead of surfacing as a Pillow traceback.
"""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from lsda_core.core.errors import DataError

# Pillow raises on a truncated JPEG unless `ImageFile.LOAD_TRUNCATED_IMAGES` is set; this
# module relies on that default: a truncated file is an error the user must see, not grey
# pixels silently filled in.


def _reason(e: BaseException) -> str:
    msg = str(e).strip() or type(e).__name__
    if isinstance(e, UnidentifiedImageError):  # Pillow's message repeats the path
        return "empty, or not an image file Pillow can identify"
    return msg.splitlines()[0]


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[Image.Image]:
    """An open image file; a missing or unreadable file (also while the body decodes it)
    becomes a DataError naming the file."""
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                yield im
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot read image ({_reason(e)})") from e


def load_image(path: Path | str) -> np.ndarray:
    """The pixels of an image file as an (H, W, 3) uint8 RGB array.

    Grayscale, palette, CMYK, 16-bit and RGBA files are converted to RGB (alpha dropped).
    Missing file -> `DataError("<path>: image file not found")`; unreadable, truncated or
    corrupt file -> `DataError("<path>: cannot read image (<reason>)")`.
    """
    path = Path(path)
    with _opened(path) as im:
        im.load()
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            # 16/32-bit grayscale: scale to 8 bits instead of clipping
            a = np.asarray(im, dtype=np.float64)
            top = a.max() if a.size and a.max() > 255 else 255.0
            g = np.clip(a * (255.0 / top), 0, 255).astype(np.uint8)
            return np.ascontiguousarray(np.repeat(g[:, :, None], 3, axis=2))
        arr = np.asarray(im if im.mode == "RGB" else im.convert("RGB"), dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3:  # defensive: convert("RGB") always gives 3 bands
        raise DataError(f"{path}: cannot read image (unexpected shape {arr.shape})")
    return np.ascontiguousarray(arr)


def load_labels(path: Path | str) -> np.ndarray:
    """The label indices of an indexed (palette) or single-channel PNG as an (H, W) uint8 array:
    a VOC segmentation mask (`SegmentationClass/`, `SegmentationObject/`) or a method's
    labelling. A colour (RGB) file is a DataError: its colours are not indices."""
    path = Path(path)
    with _opened(path) as im:
        im.load()
        if im.mode not in ("P", "L"):
            raise DataError(f"{path}: a label image must be indexed (palette) or grayscale PNG, not mode {im.mode}")
        return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))


def image_size(path: Path | str) -> tuple[int, int]:
    """(width, height) of an image file, read from its header only (no decoding)."""
    path = Path(path)
    with _opened(path) as im:
        w, h = im.size
    if w <= 0 or h <= 0:
        raise DataError(f"{path}: cannot read image (size {w}x{h})")
    return int(w), int(h)


def check_image(path: Path | str) -> tuple[int, int]:
    """(width, height) of an image file after checking that the whole file decodes: its
    structure (Pillow's `verify`) and then every pixel on a fresh open (`verify` alone does
    not decode JPEG data, so it passes a truncated JPEG). Slower than `image_size`: this is
    `lsda data --check-images`. A missing, empty, truncated, corrupt or non-image file ->
    `DataError("<path>: ...")`.
    """
    path = Path(path)
    with _opened(path) as im:
        im.verify()  # leaves the image unusable, hence the second open
    with _opened(path) as im:
        im.load()
        w, h = im.size
    if w <= 0 or h <= 0:
        raise DataError(f"{path}: cannot read image (size {w}x{h})")
    return int(w), int(h)
