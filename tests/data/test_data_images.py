"""load_image / image_size: RGB uint8 out of every mode, and one-line errors naming the file."""
from __future__ import annotations

import numpy as np
import pytest

from lsda_core.data.images import check_image, image_size, load_image
from lsda_core.core.errors import DataError


def test_jpeg_rgb(tmp_path, fx):
    p = fx.write_jpeg(tmp_path / "a.jpg", 37, 23, seed=1)
    im = load_image(p)
    assert im.shape == (23, 37, 3) and im.dtype == np.uint8
    assert image_size(p) == (37, 23)
    assert image_size(str(p)) == (37, 23)


def test_png_exact_pixels(tmp_path, fx):
    arr = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    p = fx.write_image(tmp_path / "a.png", arr)
    assert np.array_equal(load_image(p), arr)


def test_grayscale_becomes_three_equal_channels(tmp_path, fx):
    g = np.arange(6 * 4, dtype=np.uint8).reshape(6, 4) * 10
    im = load_image(fx.write_image(tmp_path / "g.png", g))
    assert im.shape == (6, 4, 3)
    for c in range(3):
        assert np.array_equal(im[:, :, c], g)


def test_rgba_drops_alpha(tmp_path, fx):
    a = np.zeros((3, 3, 4), np.uint8)
    a[..., 0], a[..., 1], a[..., 2], a[..., 3] = 200, 100, 50, 0
    im = load_image(fx.write_image(tmp_path / "a.png", a))
    assert im.shape == (3, 3, 3)
    assert (im == np.array([200, 100, 50], np.uint8)).all()


def test_16bit_grayscale_scaled(tmp_path, fx):
    g = np.array([[0, 1000], [30000, 65535]], dtype=np.uint16)
    im = load_image(fx.write_image(tmp_path / "g16.png", g))
    assert im.shape == (2, 2, 3) and im.dtype == np.uint8
    assert im[0, 0, 0] == 0 and im[1, 1, 0] == 255 and im[1, 0, 0] > im[0, 1, 0]


def test_missing_file(tmp_path):
    p = tmp_path / "nope.jpg"
    with pytest.raises(DataError) as e:
        load_image(p)
    assert str(e.value) == f"{p}: image file not found"
    with pytest.raises(DataError, match="image file not found"):
        image_size(p)


def test_corrupt_bytes(tmp_path):
    p = tmp_path / "bad.jpg"
    p.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 3)
    with pytest.raises(DataError) as e:
        load_image(p)
    assert str(e.value).startswith(f"{p}: cannot read image (")
    with pytest.raises(DataError) as e:
        image_size(p)
    assert str(e.value).startswith(f"{p}: cannot read image (")


def test_truncated_jpeg(tmp_path, fx):
    data = fx.jpeg_bytes(64, 64, seed=3)
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: len(data) // 2])
    # the header is intact, so the size is still known ...
    assert image_size(p) == (64, 64)
    # ... but decoding must fail loudly, not return half-grey pixels
    with pytest.raises(DataError) as e:
        load_image(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: cannot read image (") and "truncated" in msg


def test_empty_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(DataError, match=r"cannot read image"):
        load_image(p)


def test_directory_is_not_an_image(tmp_path):
    with pytest.raises(DataError, match="image file not found"):
        load_image(tmp_path)


# ----------------------------------------------------------------- check_image (lsda data --check-images)

def test_check_image_passes_whole_files(tmp_path, fx):
    assert check_image(fx.write_jpeg(tmp_path / "a.jpg", 37, 23, seed=1)) == (37, 23)
    assert check_image(fx.write_image(tmp_path / "a.png", np.zeros((5, 7, 3), np.uint8))) == (7, 5)


def test_check_image_decodes_every_pixel(tmp_path, fx):
    """A JPEG cut in half keeps its header: the size reads and Pillow's verify() passes it
    (it does not decode JPEG data); check_image must still fail, naming the file."""
    from PIL import Image

    data = fx.jpeg_bytes(64, 64, seed=3)
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: len(data) // 2])
    with Image.open(p) as im:
        im.verify()  # the header-only check a weaker test would rely on
    with pytest.raises(DataError) as e:
        check_image(p)
    assert str(e.value).startswith(f"{p}: cannot read image (") and "truncated" in str(e.value)


@pytest.mark.parametrize("content, reason", [
    (b"", "empty, or not an image file"),
    (b"this is a text file, not a jpeg\n", "empty, or not an image file"),
    (b"\xff\xd8\xff\xe0 this is not really a jpeg" * 3, ""),
])
def test_check_image_rejects_what_is_not_an_image(tmp_path, content, reason):
    p = tmp_path / "x.jpg"
    p.write_bytes(content)
    with pytest.raises(DataError) as e:
        check_image(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: cannot read image (") and reason in msg and "\n" not in msg


def test_check_image_missing_or_folder(tmp_path):
    for p in (tmp_path / "nope.jpg", tmp_path):
        with pytest.raises(DataError, match="image file not found"):
            check_image(p)
