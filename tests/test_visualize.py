"""visualize: reading every image kind (upright by its EXIF orientation, 16-bit scaled like the
dataset converters), image specs, drawing boxes with label-map names, and errors that name the
file."""

import cv2
import numpy as np
import pytest
from PIL import Image

import errors
import visualize
from conftest import STREET, sideways_photo
from detections import Detections


def test_read_image_converts_every_kind_to_uint8_rgb(tmp_path):
    rgb = np.asarray(Image.open(STREET).convert("RGB"))
    gray = np.asarray(Image.open(STREET).convert("L"))
    Image.fromarray(gray).save(tmp_path / "gray.png")
    rgba = Image.open(STREET).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(tmp_path / "alpha.png")
    Image.open(STREET).convert("P").save(tmp_path / "palette.png")
    cv2.imwrite(str(tmp_path / "gray16.png"), gray.astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "rgb16.png"), rgb[..., ::-1].astype(np.uint16) * 257)
    assert Image.open(tmp_path / "gray16.png").mode.startswith("I;16")
    for name in ("gray.png", "alpha.png", "palette.png", "gray16.png", "rgb16.png"):
        image = visualize.read_image(str(tmp_path / name))
        assert image.dtype == np.uint8 and image.shape == (636, 1024, 3), name
    np.testing.assert_array_equal(visualize.read_image(str(tmp_path / "gray16.png")),
                                  np.repeat(gray[..., None], 3, axis=2))
    np.testing.assert_array_equal(visualize.read_image(str(tmp_path / "rgb16.png")), rgb)
    np.testing.assert_array_equal(visualize.read_image(str(tmp_path / "alpha.png")), rgb)


@pytest.mark.parametrize("orientation,shape", [(6, (64, 48, 3)), (8, (64, 48, 3)),
                                               (3, (48, 64, 3)), (1, (48, 64, 3))])
def test_read_image_turns_photos_upright_as_viewers_show_them(tmp_path, orientation, shape):
    path = tmp_path / f"o{orientation}.jpg"
    upright_6 = sideways_photo(path, orientation)
    image = visualize.read_image(str(path))
    assert image.shape == shape
    stored = np.asarray(Image.open(path).convert("RGB"))
    want = {6: upright_6, 8: np.rot90(stored, k=1), 3: np.rot90(stored, k=2), 1: stored}
    assert np.abs(image.astype(int) - want[orientation]).mean() < 1


def test_read_image_errors_name_the_file(tmp_path):
    with pytest.raises(visualize.ImageReadError, match=f"'{tmp_path}/missing.jpg': no such file"):
        visualize.read_image(str(tmp_path / "missing.jpg"))
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(errors.DataError, match="bad.jpg': cannot decode it as an image"):
        visualize.read_image(str(tmp_path / "bad.jpg"))


def test_expand_image_inputs(tmp_path):
    for name in ("b.jpg", "a.jpg", "c.png"):
        (tmp_path / name).write_bytes(b"x")
    paths, problems = visualize.expand_image_inputs(
        f"{tmp_path}/*.jpg, {tmp_path}/c.png,,{tmp_path}/none*.png,{tmp_path}/missing.jpg")
    assert paths == [f"{tmp_path}/a.jpg", f"{tmp_path}/b.jpg", f"{tmp_path}/c.png",
                     f"{tmp_path}/missing.jpg"]
    assert problems == [f"'{tmp_path}/none*.png': no file matches this pattern"]


def test_draw_detections_labels_boxes_with_the_label_map():
    image = np.zeros((100, 200, 3), np.uint8)
    det = Detections(np.array([[20, 30, 80, 150], [10, 10, 20, 20]], np.float32),
                     np.array([0.9, 0.3], np.float32), np.array([2, 7], np.int32))
    drawn = visualize.draw_detections(image, det, {2: "bicycle"}, score_thresh=0.5,
                                      line_thickness=2)
    color = np.array(visualize.COLORS[2])
    assert (drawn[79, 60] == color).all() and (drawn[50, 149] == color).all()
    assert (drawn[50, 90] == 0).all()  # inside the box: untouched
    assert not drawn[12:19, 12:19].any()  # below score_thresh: not drawn
    assert drawn[:20, 30:150].any()  # the label above the box
    assert visualize.class_name({2: "bicycle"}, 2) == "bicycle"
    assert visualize.class_name({2: "bicycle"}, 7) == "class 7"


def test_write_image_under_a_file_names_the_path(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(errors.OutputError, match=f"cannot create directory '{tmp_path}/afile'"):
        visualize.write_image(np.zeros((4, 4, 3), np.uint8), str(tmp_path / "afile" / "0.jpg"))
    out = visualize.write_image(np.zeros((4, 4, 3), np.uint8), str(tmp_path / "d" / "0.jpg"))
    assert Image.open(out).size == (4, 4)
