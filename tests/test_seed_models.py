"""The models, losses and schedules of the other source systems (seeds 000, 001, 002, 004)."""

import pytest
import torch
import torchvision

from ssl_inpaint.config import resolve_config
from ssl_inpaint.engine.pretrain import phase_for
from ssl_inpaint.options.pretrain import PretrainConfig
from ssl_inpaint.gan_step import Optimizers, train_step
from ssl_inpaint.errors import UserError
from ssl_inpaint.losses import LossWeights, feature_losses, generator_loss
from ssl_inpaint.masks import apply_mask
from ssl_inpaint.models import (
    GENERATORS,
    GlcicFusedDiscriminator,
    InpaintingModels,
    build_encoder,
    create_generator,
    global_discriminator,
    patchgan_discriminator,
    pixel_discriminator,
)
from ssl_inpaint.models.perceptual_unet import PerceptualUNetGenerator
from ssl_inpaint.models.vgg import VGG16Discriminator, load_vgg16_features, read_vgg16_trunk

OTHER_GENERATORS = [name for name in GENERATORS if name != "unet"]


def holed_batch(size=32, channels=3, n=2):
    torch.manual_seed(1)
    image = torch.rand(n, channels, size, size) * 2 - 1
    mask = torch.zeros(n, 1, size, size)
    mask[..., size // 4 : size // 2, size // 4 : size // 2] = 1
    return {"image": image, "mask": mask, "input": apply_mask(image, mask, torch.zeros(channels))}


@pytest.mark.parametrize("name", OTHER_GENERATORS)
@pytest.mark.parametrize("channels", [1, 3])
def test_generators_complete_images_and_their_encoders_rebuild_from_arch(name, channels):
    torch.manual_seed(0)
    generator = create_generator(name, image_channels=channels, image_size=32, base_channels=4, approx_hidden=8)
    b = holed_batch(channels=channels)
    out = generator(b["input"])
    assert out.shape == b["image"].shape and out.abs().max() <= 1
    rebuilt = build_encoder(generator.encoder.arch)
    rebuilt.load_state_dict(generator.encoder.state_dict())  # strict: same names and shapes
    features = rebuilt.eval()(b["input"])
    assert [f.shape[1] for f in features] == list(generator.encoder.out_channels)


def test_scaled_skips_multiply_the_encoder_features():
    torch.manual_seed(0)
    generator = PerceptualUNetGenerator(3, 32, base_channels=4).eval()
    features, mixed_inputs = [], []
    generator.encoder.register_forward_hook(lambda m, i, out: features.extend(out))
    for mix in generator.mixes:
        mix.register_forward_hook(lambda m, inputs, out: mixed_inputs.append(inputs[0]))
    generator(holed_batch()["input"])
    assert generator.skip_scales == (1.0, 0.8, 0.4, 0.2)
    for skip, scale, mixed in zip(reversed(features[:-1]), generator.skip_scales, mixed_inputs):
        torch.testing.assert_close(mixed[:, -skip.shape[1] :], skip * scale)


def test_discriminator_kinds_output_shapes():
    images, crops = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 28, 28)
    flatten = GlcicFusedDiscriminator(3, 64, 28, "flatten", base=4)
    gap = GlcicFusedDiscriminator(3, 64, 28, "gap", base=4)
    assert flatten(images, crops).shape == (2,) and gap(images, crops).shape == (2,)
    # flatten: 2x2 maps of 32 channels from each trunk; gap: one 32-vector from each; then 64 wide each
    assert flatten.global_fc[0].in_features == flatten.local_fc[0].in_features == 32 * 2 * 2
    assert gap.global_fc[0].in_features == gap.local_fc[0].in_features == 32
    assert flatten.head.in_features == gap.head.in_features == 2 * 64
    assert patchgan_discriminator(3, 4)(torch.rand(2, 3, 32, 32)).shape == (2, 2 * 2)  # 32 -> 4 -> 3 -> 2
    assert pixel_discriminator(3, 4)(torch.rand(2, 3, 16, 16)).shape == (2, 16 * 16)


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """A whole torchvision vgg16 state dict (classifier included), with random weights."""
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pt"
    torch.manual_seed(0)
    torch.save(torchvision.models.vgg16(weights=None).state_dict(), path)
    return str(path)


@pytest.fixture(scope="module")
def vgg(vgg_file):
    return load_vgg16_features(vgg_file)


def test_perceptual_and_style_losses(vgg):
    image = torch.rand(2, 3, 32, 32) * 2 - 1
    perceptual, style = feature_losses(vgg, image, image)
    assert perceptual.item() == 0 and style.item() == 0
    perceptual, style = feature_losses(vgg, image.flip(-1), image)
    assert perceptual.item() > 0 and style.item() >= 0
    # only the completed image's hole can move the loss: a prediction differing outside it costs nothing here
    b = holed_batch()
    prediction = torch.where(b["mask"].bool(), b["image"], -b["image"])
    terms = generator_loss(prediction, b["image"], b["mask"], LossWeights(0, 0, 0, 0, 1.0, 1.0), "l1", features=vgg)
    assert terms["perceptual"].item() == 0 and terms["total"].item() == 0
    assert not any(p.requires_grad for p in vgg.parameters()) and not vgg.train().training
    assert vgg(torch.rand(1, 1, 16, 16))[0].shape[1] == 64  # grayscale goes in as three equal channels


def test_vgg16_discriminator_trains_only_its_dense_layers(vgg_file):
    torch.manual_seed(0)
    models = InpaintingModels(create_generator("glcic", image_channels=1, image_size=32, base_channels=4),
                              VGG16Discriminator(32), None, 16)
    models.global_d.load_trunk(read_vgg16_trunk(vgg_file))
    trunk_before, head_before = snapshot(models.global_d.trunk), snapshot(models.global_d.head)
    stats = train_step(models, [holed_batch(channels=1)], adam(models, 1e-3, 1e-3), LossWeights(1, 1, 0.1, 0), "l1", "joint")
    assert {"loss/d_global", "loss/g_adv_global"} <= set(stats)
    assert unchanged(trunk_before, models.global_d.trunk) and not unchanged(head_before, models.global_d.head)
    with pytest.raises(UserError, match="multiple of 32"):
        VGG16Discriminator(48)


def test_vgg_weights_problems_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="VGG16 weights file not found"):
        load_vgg16_features(str(tmp_path / "missing.pt"))
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "wrong.pt")
    with pytest.raises(UserError, match="not a torchvision vgg16 state dict"):
        load_vgg16_features(str(tmp_path / "wrong.pt"))
    (tmp_path / "garbage.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="is not a readable VGG16 weights file"):
        load_vgg16_features(str(tmp_path / "garbage.pt"))
    with pytest.raises(UserError, match="need VGG16 weights: pass --vgg-weights"):
        resolve_config(PretrainConfig, {"w_style": 1.0}, {})


def adam(models, lr_g, lr_d):
    return Optimizers(
        torch.optim.Adam(models.generator.parameters(), lr=lr_g),
        torch.optim.Adam([p for d in models.discriminators for p in d.parameters()], lr=lr_d),
        torch.amp.GradScaler("cpu", enabled=False), torch.amp.GradScaler("cpu", enabled=False),
    )


def snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def unchanged(before, module):
    return all(torch.equal(a, p) for a, p in zip(before, module.parameters()))


def test_two_stage_second_stage_freezes_the_discriminator():
    torch.manual_seed(0)
    models = InpaintingModels(create_generator("perceptual_unet", image_channels=3, image_size=32, base_channels=4),
                              global_discriminator(3, 32), None, 16)
    opts, b = adam(models, 1e-3, 1e-3), holed_batch()
    d_before, g_before = snapshot(models.global_d), snapshot(models.generator)
    stats = train_step(models, [b], opts, LossWeights(1.0, 6.0, 0.1, 0.0), "l1", "frozen_d")
    assert "loss/g_adv_global" in stats and not any(k.startswith("loss/d_") for k in stats)
    assert unchanged(d_before, models.global_d) and not unchanged(g_before, models.generator)
    assert all(p.grad is None for p in models.global_d.parameters())

    config = resolve_config(PretrainConfig, {"schedule": "two_stage", "stage_fraction": 0.3}, {})
    assert [phase_for(config, s, s % 4, 4, 10) for s in range(10)] == ["joint"] * 3 + ["frozen_d"] * 7


def test_approx_stage_trains_only_approxnet_and_the_refiner_stage_leaves_it_alone():
    torch.manual_seed(0)
    generator = create_generator("approx_attention", image_channels=3, image_size=32, base_channels=4, approx_hidden=8)
    models = InpaintingModels(generator, global_discriminator(3, 32), None, 16)
    opts, b = adam(models, 1e-3, 1e-3), holed_batch()
    approx_before, refiner_before = snapshot(generator.approx_net), snapshot(generator.encoder)
    d_before = snapshot(models.global_d)
    stats = train_step(models, [b], opts, LossWeights(1.0, 1.0, 0.01, 0.0), "l1", "approx")
    assert "loss/g_rec_hole" in stats and "loss/g_adv_global" not in stats
    assert not unchanged(approx_before, generator.approx_net)
    assert unchanged(refiner_before, generator.encoder) and unchanged(d_before, models.global_d)

    approx_before = snapshot(generator.approx_net)
    stats = train_step(models, [b], opts, LossWeights(1.0, 1.0, 0.01, 0.0), "l1", "joint")
    assert {"loss/g_adv_global", "loss/d_global"} <= set(stats)
    assert unchanged(approx_before, generator.approx_net) and not unchanged(refiner_before, generator.encoder)

    generator.eval()(b["input"])
    maps = generator.attention_maps(b["mask"])
    assert maps.shape == (2, 1, 32, 32) and maps.min() >= 0 and maps.amax(dim=(1, 2, 3)).allclose(torch.ones(2))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"generator": "approx_attention"}, "go together"),
        ({"schedule": "approx_then_refine"}, "go together"),
        ({"discriminator": "glcic_fused", "local_d": False}, "keep --global-d --local-d"),
        ({"discriminator": "patchgan"}, "--no-local-d"),
        ({"generator": "pix2pix_unet", "discriminator": "patchgan", "local_d": False, "image_size": 16}, "24 or more"),
        ({"generator": "glcic", "predict": "hole"}, "--generator unet only"),
        ({"schedule": "two_stage", "stage_fraction": 1.0}, "--stage-fraction"),
    ],
)
def test_incompatible_options_are_clear_errors(options, message):
    with pytest.raises(UserError, match=message):
        resolve_config(PretrainConfig, options, {})
