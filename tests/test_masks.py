import numpy as np
import pytest
import torch

from ssl_inpaint.errors import UserError
from ssl_inpaint.masks import MASKS, apply_mask, create_mask_generator, mask_seed


def rng(seed=0):
    return np.random.default_rng(seed)


def box_of(mask):
    ys, xs = torch.nonzero(mask[0], as_tuple=True)
    return int(ys.min()), int(xs.min()), int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)


@pytest.mark.parametrize("kind", list(MASKS))
def test_every_kind_is_binary_seeded_and_sized(kind):
    gen = create_mask_generator(kind)
    a = gen(96, 64, rng(3))
    b = gen(96, 64, rng(3))
    assert a.shape == (1, 96, 64) and a.dtype == torch.float32
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    assert 0 < a.mean() < 1
    assert torch.equal(a, b), "same seed must give the same mask"


@pytest.mark.parametrize("kind", ["rect", "gaussian_rect", "region", "brush"])
def test_random_kinds_change_with_the_seed(kind):
    gen = create_mask_generator(kind)
    masks = {tuple(gen(64, 64, rng(s)).flatten().tolist()) for s in range(6)}
    assert len(masks) > 1


def test_centre_square_geometry_seed_003():
    mask = create_mask_generator("centre", size=0.5)(128, 128, rng())
    assert box_of(mask) == (32, 32, 64, 64)
    assert mask.sum() == 64 * 64


def test_rectangles_follow_seed_000_sizes_and_scale():
    gen = create_mask_generator("rect")  # 20-25 px on 64 px images
    for s in range(50):
        _, _, h, w = box_of(gen(64, 64, rng(s)))
        assert 20 <= h <= 25 and 20 <= w <= 25
        _, _, h, w = box_of(gen(128, 128, rng(s)))
        assert 40 <= h <= 50 and 40 <= w <= 50


def test_gaussian_rectangles_follow_seed_001():
    gen = create_mask_generator("gaussian_rect")
    tops, sides = [], []
    for s in range(400):
        top, left, h, w = box_of(gen(64, 64, rng(s)))
        tops.append(top)
        sides += [h, w]
    assert min(sides) >= 10 and max(sides) <= 20
    assert abs(np.mean(tops) - 25) < 2  # N(25, 10), slightly clipped at the borders
    assert 7 < np.std(tops) < 11


def test_lower_half():
    mask = create_mask_generator("lower_half")(32, 32, rng())
    assert mask[:, :16].sum() == 0 and mask[:, 16:].min() == 1


def test_random_region_coverage():
    gen = create_mask_generator("region")
    for s in range(20):
        assert 0.19 <= float(gen(128, 128, rng(s)).mean()) <= 0.31


def test_coco_object_picks_an_eligible_object_else_falls_back():
    gen = create_mask_generator("coco_object", min_area=0.05, max_area=0.5)
    objects = torch.zeros(3, 64, 64, dtype=torch.uint8)
    objects[0, :2, :2] = 1  # too small
    objects[1, 10:40, 10:40] = 1  # eligible (22 %)
    objects[2] = 1  # too large
    assert torch.equal(gen(64, 64, rng(), objects)[0], objects[1].float())
    fallback = gen(64, 64, rng(), torch.zeros(0, 64, 64))
    assert 0 < fallback.mean() < 1


def test_unknown_kind_is_a_clear_error():
    with pytest.raises(UserError, match="unknown mask family 'triangle' for --mask; choose one of: centre, rect"):
        create_mask_generator("triangle")


def test_apply_mask_fills_the_hole_and_adds_the_mask_channel():
    image = torch.rand(3, 8, 8) * 2 - 1
    mask = create_mask_generator("centre")(8, 8, rng())
    fill = torch.tensor([0.1, 0.2, 0.3])
    out = apply_mask(image, mask, fill)
    assert out.shape == (4, 8, 8)
    assert torch.equal(out[3], mask[0])
    assert torch.equal(out[:3][:, mask[0] == 0], image[:, mask[0] == 0])
    assert torch.allclose(out[:3, 4, 4], fill)


def test_mask_seed_depends_on_seed_epoch_and_index():
    draws = {mask_seed(s, e, i).random() for s in (0, 1) for e in (0, 1) for i in (0, 1)}
    assert len(draws) == 8
    assert mask_seed(1, 2, 3).random() == mask_seed(1, 2, 3).random()
