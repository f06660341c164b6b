"""``ssl inpaint``: any size and aspect, masks and boxes, RGBA / grey input, known pixels kept byte for byte."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssl_inpaint.engine.inpaint import plan_windows, read_mask, run_inpaint
from ssl_inpaint.errors import UserError
from ssl_inpaint.completion import load_inpainter

REPO = Path(__file__).resolve().parents[1]


def photo(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    ramp = np.add.outer(np.linspace(0, 180, height), np.linspace(0, 60, width))
    rgb = np.stack([ramp, ramp[::-1], np.full_like(ramp, 90)], -1) + rng.integers(0, 40, (height, width, 3))
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    if mode == "RGBA":
        image.putalpha(Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8)))
        return image
    return image.convert(mode)


def white_mask(width: int, height: int, boxes) -> Image.Image:
    mask = np.zeros((height, width), np.uint8)
    for x, y, w, h in boxes:
        mask[y : y + h, x : x + w] = 255
    return Image.fromarray(mask)


def assert_known_pixels_kept(before: Image.Image, after: Image.Image, hole: np.ndarray) -> None:
    a, b = np.asarray(before), np.asarray(after)
    assert after.mode == before.mode and after.size == before.size
    assert np.array_equal(a[~hole], b[~hole]), "a known pixel changed"
    assert (a[hole] != b[hole]).any(), "the hole was not filled"


@pytest.mark.slow
def test_odd_size_rgb_with_a_mask_png(tiny_generator, tmp_path):
    image = photo(97, 131)  # odd sides, portrait: no multiple of the generator's 32 px
    image.save(tmp_path / "odd.jpg", quality=95)
    decoded = Image.open(tmp_path / "odd.jpg").convert("RGB")
    boxes = [(10, 12, 9, 11), (60, 90, 30, 30), (90, 125, 7, 6)]  # the last one touches two borders
    white_mask(97, 131, boxes).save(tmp_path / "mask.png")
    [out] = run_inpaint(tmp_path / "odd.jpg", str(tiny_generator), tmp_path / "out.png", mask=tmp_path / "mask.png")
    assert out == tmp_path / "out.png"
    hole = np.asarray(Image.open(tmp_path / "mask.png")) >= 128
    assert_known_pixels_kept(decoded, Image.open(out), hole)


@pytest.mark.slow
def test_rgba_image_with_alpha_mask_keeps_alpha_and_known_pixels(tiny_generator, tmp_path):
    image = photo(70, 45, "RGBA", seed=1)
    image.save(tmp_path / "a.png")
    mask = Image.new("RGBA", (70, 45), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (20, 10, 40, 30))  # transparent = hole, whatever the colour
    mask.save(tmp_path / "hole.png")
    [out] = run_inpaint(tmp_path / "a.png", str(tiny_generator), tmp_path / "res", mask=tmp_path / "hole.png")
    assert out == tmp_path / "res" / "a.png"
    result = Image.open(out)
    hole = read_mask(tmp_path / "hole.png", (70, 45), tmp_path / "a.png")
    assert hole.sum() == 20 * 20
    assert_known_pixels_kept(image, result, hole[..., None].repeat(4, -1) & (np.arange(4) < 3))
    assert np.array_equal(np.asarray(result)[..., 3], np.asarray(image)[..., 3]), "alpha must be untouched"


@pytest.mark.slow
def test_grayscale_input_with_boxes(tiny_generator, tmp_path):
    image = photo(128, 40, "L", seed=2)
    image.save(tmp_path / "g.png")
    [out] = run_inpaint(tmp_path / "g.png", str(tiny_generator), tmp_path / "g_out.png", boxes=["5,5,10,10", "100,20,20,20"])
    hole = np.zeros((40, 128), bool)
    hole[5:15, 5:15] = hole[20:40, 100:120] = True
    assert_known_pixels_kept(image, Image.open(out), hole)


@pytest.mark.slow
def test_large_hole_gets_a_resized_window(tiny_generator, tmp_path):
    inpainter = load_inpainter(tiny_generator, "cpu")
    hole = np.zeros((150, 200), bool)
    hole[40:120, 50:110] = True  # 80 px: far larger than the 16 px (0.5 x 32) holes of training
    [window] = plan_windows(hole, 0, inpainter)
    assert window.side == 160 and window.component.sum() == 80 * 60
    image = photo(200, 150, seed=3)
    image.save(tmp_path / "big.png")
    white_mask(200, 150, [(50, 40, 60, 80)]).save(tmp_path / "m.png")
    [out] = run_inpaint(tmp_path / "big.png", str(tiny_generator), tmp_path / "big_out.png", mask=tmp_path / "m.png")
    assert_known_pixels_kept(image, Image.open(out), hole)


@pytest.mark.slow
def test_small_image_smaller_than_the_window_is_mirrored(tiny_generator, tmp_path):
    image = photo(20, 13, seed=4)
    image.save(tmp_path / "tiny.png")
    [out] = run_inpaint(tmp_path / "tiny.png", str(tiny_generator), tmp_path / "o.png", boxes=["0,0,5,4"])
    hole = np.zeros((13, 20), bool)
    hole[0:4, 0:5] = True
    assert_known_pixels_kept(image, Image.open(out), hole)


@pytest.mark.slow
def test_folder_with_mask_folder_in_batches(tiny_generator, tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "masks" / "sub").mkdir(parents=True)
    sizes = {"a": (50, 40), "b": (33, 61), "sub/c": (64, 64)}
    for name, (w, h) in sizes.items():
        photo(w, h, seed=len(name)).save(tmp_path / "in" / f"{name}.png")
        white_mask(w, h, [(3, 4, 12, 10)]).save(tmp_path / "masks" / f"{name}_mask.png")
    written = run_inpaint(tmp_path / "in", str(tiny_generator), tmp_path / "out", mask=tmp_path / "masks", batch_size=2)
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in written) == ["a.png", "b.png", "sub/c.png"]
    for name, (w, h) in sizes.items():
        hole = np.asarray(white_mask(w, h, [(3, 4, 12, 10)])) > 0
        assert_known_pixels_kept(Image.open(tmp_path / "in" / f"{name}.png"), Image.open(tmp_path / "out" / f"{name}.png"), hole)


@pytest.mark.slow
def test_mask_of_the_wrong_size_ends_in_one_error_line(tiny_generator, tmp_path):
    photo(97, 131).save(tmp_path / "odd.png")
    white_mask(128, 128, [(0, 0, 8, 8)]).save(tmp_path / "mask.png")
    command = ["inpaint", "odd.png", "--mask", "mask.png", "--checkpoint", str(tiny_generator), "-o", "out.png"]
    result = subprocess.run([sys.executable, "-m", "ssl_inpaint", *command], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "error: mask mask.png is 128x128 but image odd.png is 97x131; give a mask of the image's size (white = hole)\n"
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize(
    "boxes, output, message",
    [
        (["1,2,3"], "o.png", "--box must be x,y,w,h"),
        (["500,500,4,4"], "o.png", "lies outside image"),
        ([], "o.png", "no hole given: pass --mask"),
        (["1,1,4,4"], "x.jpg", "written as PNG"),
        (["1,1,4,4"], "p.png", "would overwrite the input"),
    ],
)
@pytest.mark.slow
def test_bad_options_are_clear_errors(tiny_generator, tmp_path, boxes, output, message):
    photo(40, 30).save(tmp_path / "p.png")
    with pytest.raises(UserError, match=message):
        run_inpaint(tmp_path / "p.png", str(tiny_generator), tmp_path / output, boxes=boxes)


@pytest.mark.slow
def test_encoder_file_or_empty_folder_is_refused(tiny_generator, tmp_path):
    photo(40, 30).save(tmp_path / "p.png")
    with pytest.raises(UserError, match="holds only the encoder"):
        run_inpaint(tmp_path / "p.png", str(tiny_generator / "encoder.pt"), tmp_path / "o.png", boxes=["1,1,4,4"])
    with pytest.raises(UserError, match="no trained generator"):
        run_inpaint(tmp_path / "p.png", str(tmp_path), tmp_path / "o.png", boxes=["1,1,4,4"])
