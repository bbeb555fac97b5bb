"""read_voc on fixture VOC folders: boxes in the 0-based edge convention, flags, attributes,
class inference, and every error naming its file."""
from __future__ import annotations

import numpy as np
import pytest

from lsda_core.data.voc import VOC_CLASSES, read_voc, voc_xml, write_voc_xml
from lsda_core.core.errors import DataError
from lsda_core.core.structures import DetectionDataset, ImageAnn, ObjectAnn


def test_voc_classes_devkit_order():
    assert len(VOC_CLASSES) == 20
    assert VOC_CLASSES[0] == "aeroplane" and VOC_CLASSES[-1] == "tvmonitor"
    assert VOC_CLASSES.index("person") == 14 and VOC_CLASSES.index("diningtable") == 10


def test_read_written_dataset(tmp_path, fx):
    root = fx.make_voc(tmp_path / "VOC2007")
    ds = read_voc(root, "trainval")
    assert isinstance(ds, DetectionDataset)
    assert ds.split == "trainval" and ds.root == root
    assert [im.image_id for im in ds.images] == ["000001", "000002", "000003"]
    assert ds.classes == list(VOC_CLASSES)  # every name seen is a VOC class

    im1 = ds.images[0]
    assert (im1.width, im1.height) == (100, 80)
    assert im1.path == root / "JPEGImages" / "000001.jpg"
    dog, person = im1.objects
    # file: xmin=10 ymin=20 xmax=50 ymax=60 -> edges [9, 19, 50, 60]
    assert dog.cls == "dog" and np.array_equal(dog.box, [9, 19, 50, 60])
    assert dog.box.dtype == np.float64
    assert not dog.difficult and not dog.truncated and not dog.occluded
    assert dog.pose == "Unspecified"
    # the whole image: file 1,1,100,80 -> [0, 0, 100, 80]
    assert person.difficult and person.pose == "Left"
    assert np.array_equal(person.box, [0, 0, 100, 80])
    assert person.attrs == {}

    cat = ds.images[1].objects[0]
    assert cat.truncated and cat.occluded and cat.pose == "Rear"
    assert np.array_equal(cat.box, [30, 10, 60, 40])
    assert ds.images[2].objects == []


def test_attributes_element(tmp_path, fx):
    ds = read_voc(fx.make_voc(tmp_path), "trainval")
    attrs = ds.images[0].objects[0].attrs
    assert attrs == {"occlusion": 0.25, "superclass": "animal", "parts": {"head": 1, "tail": 0.5},
                     "n_parts": 3, "mirrored": 1}
    assert isinstance(attrs["occlusion"], float) and isinstance(attrs["n_parts"], int)
    assert isinstance(attrs["parts"]["tail"], float)


def test_writer_reader_round_trip(tmp_path):
    """What the embedded world writes is read back exactly (integer boxes)."""
    rng = np.random.default_rng(0)
    anns = []
    for i in range(30):
        w, h = int(rng.integers(20, 200)), int(rng.integers(20, 200))
        objs = []
        for _ in range(int(rng.integers(0, 5))):
            x1, x2 = sorted(rng.choice(w + 1, 2, replace=False))
            y1, y2 = sorted(rng.choice(h + 1, 2, replace=False))
            objs.append(ObjectAnn(VOC_CLASSES[int(rng.integers(20))], np.array([x1, y1, x2, y2], float),
                                  difficult=bool(rng.integers(2)), truncated=bool(rng.integers(2)),
                                  attrs={"occlusion": round(float(rng.random()), 3), "view": "side"}))
        anns.append(ImageAnn(f"{i:06d}", tmp_path / "JPEGImages" / f"{i:06d}.jpg", w, h, objs))
        write_voc_xml(tmp_path / "Annotations" / f"{i:06d}.xml", anns[-1])
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text("".join(a.image_id + "\n" for a in anns))
    ds = read_voc(tmp_path, "train")
    for a, b in zip(anns, ds.images):
        assert (a.image_id, a.width, a.height, a.path) == (b.image_id, b.width, b.height, b.path)
        assert len(a.objects) == len(b.objects)
        for o, p in zip(a.objects, b.objects):
            assert o.cls == p.cls and np.array_equal(o.box, p.box)
            assert (o.difficult, o.truncated, o.occluded) == (p.difficult, p.truncated, p.occluded)
            assert p.attrs["view"] == "side" and p.attrs["occlusion"] == pytest.approx(o.attrs["occlusion"])


def test_real_devkit_style_file(tmp_path, fx):
    root = fx.make_voc(tmp_path, anns=[], extra_xml={"000004": fx.REAL_STYLE_XML})
    ds = read_voc(root, "trainval")
    im = ds.images[0]
    assert (im.width, im.height) == (120, 90)
    person, bottle = im.objects  # the <part> inside person is not an object
    assert person.cls == "person" and person.truncated
    assert not person.difficult  # no <difficult> tag -> 0
    assert person.pose == "Unspecified"  # no <pose> tag
    # decimal coordinates: xmin 12.5 -> 11.5, xmax 60.25 stays
    assert np.allclose(person.box, [11.5, 2, 60.25, 90])
    assert bottle.occluded and bottle.pose == "Frontal" and not bottle.difficult
    assert np.array_equal(bottle.box, [99, 49, 110, 80])


def test_one_pixel_outside_is_clipped(tmp_path, fx):
    # xmin=0 and xmax=width+1 occur in real files: within the 1 px tolerance, clipped
    xml = fx.voc_xml_text(fx.voc_object("dog", 0, 1, 101, 80))
    root = fx.make_voc(tmp_path, anns=[], extra_xml={"a": xml})
    assert np.array_equal(read_voc(root, "trainval").images[0].objects[0].box, [0, 0, 100, 80])


def test_one_pixel_box_is_valid(tmp_path, fx):
    xml = fx.voc_xml_text(fx.voc_object("dog", 5, 5, 5, 5))
    root = fx.make_voc(tmp_path, anns=[], extra_xml={"a": xml})
    assert np.array_equal(read_voc(root, "trainval").images[0].objects[0].box, [4, 4, 5, 5])


def test_class_inference_non_voc(tmp_path, fx):
    xml = fx.voc_xml_text(fx.voc_object("zebra") + fx.voc_object("ant") + fx.voc_object("dog"))
    root = fx.make_voc(tmp_path, anns=[], extra_xml={"a": xml})
    assert read_voc(root, "trainval").classes == ["ant", "dog", "zebra"]


def test_given_classes(tmp_path, fx):
    root = fx.make_voc(tmp_path)
    ds = read_voc(root, "trainval", classes=["person", "dog", "cat"])
    assert ds.classes == ["person", "dog", "cat"]
    with pytest.raises(DataError) as e:
        read_voc(root, "trainval", classes=["person", "cat"])
    msg = str(e.value)
    assert msg.startswith(str(root / "Annotations" / "000001.xml") + ":")
    assert "unknown class 'dog'" in msg


def test_split_list_with_blank_lines(tmp_path, fx):
    root = fx.make_voc(tmp_path)
    (root / "ImageSets" / "Main" / "odd.txt").write_text("\n000002\n\n000001  \n")
    assert [im.image_id for im in read_voc(root, "odd").images] == ["000002", "000001"]


def test_filename_with_other_extension(tmp_path, fx):
    xml = fx.voc_xml_text(fx.voc_object()).replace("<filename>x.jpg</filename>", "<filename>a.png</filename>")
    root = fx.make_voc(tmp_path, anns=[], extra_xml={"a": xml}, images=False)
    assert read_voc(root, "trainval").images[0].path == root / "JPEGImages" / "a.png"


def test_check_images(tmp_path, fx):
    root = fx.make_voc(tmp_path)
    assert len(read_voc(root, "trainval", check_images=True)) == 3
    missing = root / "JPEGImages" / "000002.jpg"
    missing.unlink()
    assert len(read_voc(root, "trainval")) == 3  # not checked by default
    with pytest.raises(DataError) as e:
        read_voc(root, "trainval", check_images=True)
    assert str(e.value).startswith(f"{missing}: image file not found")


@pytest.mark.parametrize("damage, problem", [
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "cannot read image (image file is truncated"),
    (lambda p: p.write_bytes(b""), "cannot read image (empty, or not an image file"),
    (lambda p: p.write_text("not an image\n"), "cannot read image (empty, or not an image file"),
])
def test_check_images_decodes_each_file(tmp_path, fx, damage, problem):
    """--check-images passes no truncated, empty or non-image .jpg: the error names the file."""
    root = fx.make_voc(tmp_path)
    bad = root / "JPEGImages" / "000002.jpg"
    damage(bad)
    assert len(read_voc(root, "trainval")) == 3  # reading annotations alone does not open images
    with pytest.raises(DataError) as e:
        read_voc(root, "trainval", check_images=True)
    assert str(e.value).startswith(f"{bad}: {problem}")


def test_check_images_compares_the_size_with_the_annotation(tmp_path, fx):
    root = fx.make_voc(tmp_path)
    bad = fx.write_jpeg(root / "JPEGImages" / "000002.jpg", 61, 40)
    with pytest.raises(DataError) as e:
        read_voc(root, "trainval", check_images=True)
    assert str(e.value) == f"{bad}: image is 61x40 px but {root / 'Annotations' / '000002.xml'} says 60x40"


def test_split_list_that_is_not_text(tmp_path, fx):
    root = fx.make_voc(tmp_path)
    lst = root / "ImageSets" / "Main" / "trainval.txt"
    lst.write_bytes(b"\xff\xfe0\x00\n")
    with pytest.raises(DataError) as e:
        read_voc(root, "trainval")
    assert str(e.value) == f"{lst}: cannot read split list (not UTF-8 text: byte 0xff at offset 0)"


# ----------------------------------------------------------------------------- errors

def test_missing_root(tmp_path):
    p = tmp_path / "nowhere"
    with pytest.raises(DataError) as e:
        read_voc(p, "trainval")
    assert str(e.value).startswith(f"{p}:") and "data.voc_root" in str(e.value)


def test_root_without_annotations(tmp_path):
    # pointing at VOCdevkit/ instead of VOCdevkit/VOC2007/
    (tmp_path / "VOC2007").mkdir()
    with pytest.raises(DataError) as e:
        read_voc(tmp_path, "trainval")
    assert str(e.value).startswith(f"{tmp_path}:")
    assert "data.voc_root" in str(e.value) and "Annotations/" in str(e.value)


def test_missing_split_list(tmp_path, fx):
    root = fx.make_voc(tmp_path)
    with pytest.raises(DataError) as e:
        read_voc(root, "test")
    msg = str(e.value)
    assert msg.startswith(str(root / "ImageSets" / "Main" / "test.txt") + ":")
    assert "split list not found" in msg and "data.voc_root" in msg


def test_empty_split_list(tmp_path, fx):
    root = fx.make_voc(tmp_path)
    p = root / "ImageSets" / "Main" / "empty.txt"
    p.write_text("\n")
    with pytest.raises(DataError) as e:
        read_voc(root, "empty")
    assert str(e.value) == f"{p}: split list is empty"


def test_missing_annotation_file(tmp_path, fx):
    root = fx.make_voc(tmp_path)
    xml = root / "Annotations" / "000002.xml"
    xml.unlink()
    with pytest.raises(DataError) as e:
        read_voc(root, "trainval")
    assert str(e.value) == f"{xml}: annotation file not found"


def test_malformed_xml(tmp_path, fx):
    root = fx.make_voc(tmp_path)
    xml = root / "Annotations" / "000002.xml"
    xml.write_text(xml.read_text()[:-40])
    with pytest.raises(DataError) as e:
        read_voc(root, "trainval")
    assert str(e.value).startswith(f"{xml}: malformed XML (")


def test_not_an_annotation(tmp_path, fx):
    root = fx.make_voc(tmp_path, anns=[], extra_xml={"a": "<html><body/></html>"})
    with pytest.raises(DataError, match=r"a\.xml: root element is <html>"):
        read_voc(root, "trainval")


@pytest.mark.parametrize("objects, size, needle", [
    (lambda fx: "<object><name>dog</name></object>", None, "has no <bndbox>"),
    (lambda fx: fx.voc_object(xmax=""), None, "<bndbox> has no <xmax>"),
    (lambda fx: fx.voc_object(ymin="abc"), None, "<bndbox><ymin> is 'abc', not a number"),
    (lambda fx: fx.voc_object(xmin="nan"), None, "<bndbox><xmin> is 'nan'"),
    (lambda fx: fx.voc_object(name=""), None, "object 1 has no <name>"),
    (lambda fx: fx.voc_object(extra="<difficult>maybe</difficult>"), None, "<difficult> is 'maybe'"),
    (lambda fx: fx.voc_object(), "", "no <size> element"),
    (lambda fx: fx.voc_object(), "<size><width>100</width></size>", "<size> has no <height>"),
    (lambda fx: fx.voc_object(), "<size><width>0</width><height>80</height></size>",
     "<size><width> is '0', not a positive integer"),
    (lambda fx: fx.voc_object(), "<size><width>wide</width><height>80</height></size>",
     "<size><width> is 'wide', not a number"),
])
def test_invalid_fields(tmp_path, fx, objects, size, needle):
    xml_text = fx.voc_xml_text(objects(fx), size=size)
    root = fx.make_voc(tmp_path, anns=[], extra_xml={"bad": xml_text})
    with pytest.raises(DataError) as e:
        read_voc(root, "trainval")
    msg = str(e.value)
    assert msg.startswith(str(root / "Annotations" / "bad.xml") + ":")
    assert needle in msg


@pytest.mark.parametrize("coords", [
    (10, 20, 102, 60),   # 2 px past the right edge (width 100)
    (10, 20, 50, 82),    # 2 px below the bottom (height 80)
    (-1, 20, 50, 60),    # xmin=-1 -> x1=-2
    (120, 20, 130, 60),  # entirely right of the image
])
def test_box_outside_image(tmp_path, fx, coords):
    xml_text = fx.voc_xml_text(fx.voc_object("dog", *coords))
    root = fx.make_voc(tmp_path, anns=[], extra_xml={"out": xml_text})
    with pytest.raises(DataError) as e:
        read_voc(root, "trainval")
    msg = str(e.value)
    assert msg.startswith(str(root / "Annotations" / "out.xml") + ":")
    assert "outside the 100x80 image" in msg


@pytest.mark.parametrize("coords", [(50, 20, 49, 60), (10, 60, 50, 59)])
def test_degenerate_box(tmp_path, fx, coords):
    xml_text = fx.voc_xml_text(fx.voc_object("dog", *coords))
    root = fx.make_voc(tmp_path, anns=[], extra_xml={"deg": xml_text})
    with pytest.raises(DataError) as e:
        read_voc(root, "trainval")
    msg = str(e.value)
    assert msg.startswith(str(root / "Annotations" / "deg.xml") + ":") and "degenerate box" in msg


def test_3000_images_read_without_the_jpegs(tmp_path):
    """The default world's detection sets (~3,000 annotated images) read from their
    annotations alone: no image file exists here, and none is needed."""
    ann = ImageAnn("x", tmp_path / "x.jpg", 160, 120, [
        ObjectAnn(VOC_CLASSES[k], np.array([k, k, 40 + k, 30 + k], float),
                  attrs={"occlusion": 0.1, "parts": {"a": 1.0, "b": 0.0}}) for k in range(4)])
    blob = voc_xml(ann)
    (tmp_path / "Annotations").mkdir()
    ids = [f"{i:06d}" for i in range(3000)]
    for i in ids:
        (tmp_path / "Annotations" / f"{i}.xml").write_bytes(blob)
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Main" / "all.txt").write_text("\n".join(ids) + "\n")
    ds = read_voc(tmp_path, "all")
    assert len(ds) == 3000 and sum(len(im.objects) for im in ds.images) == 12000
