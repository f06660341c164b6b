import pytest
import torch

from ssl_inpaint.errors import UserError
from ssl_inpaint.models import (
    UNetGenerator,
    create_generator,
    crop_boxes,
    global_discriminator,
    hole_boxes,
    local_discriminator,
)
from ssl_inpaint.models.unet import WholeMapConv2d, WholeMapConvTranspose2d


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def conv_bn(cin, cout, k):  # conv without bias + BatchNorm (weight, bias)
    return cin * cout * k * k + 2 * cout


def expected_unet_params(size, channels=3, bottleneck=4000, skip=True):
    """Seed 003 Table 1, counted by hand: 5 convs 64-64-128-256-512, a conv to the 1x1 latent, the
    mirror of it, and 4x4 transposed convs back to the image; skips double a decoder layer's input."""
    widths = [64, 64, 128, 256, 512]
    k = size // 32
    enc = sum(conv_bn(a, b, 4) for a, b in zip([channels + 1] + widths[:-1], widths))
    enc += conv_bn(512, bottleneck, k)
    dec = conv_bn(bottleneck, 512, k)
    m = 2 if skip else 1
    dec += conv_bn(512 * m, 256, 4) + conv_bn(256 * m, 128, 4) + conv_bn(128 * m, 64, 4) + conv_bn(64 * m, 64, 4)
    dec += 64 * m * channels * 16 + channels  # output layer: transposed conv with bias, no BN
    return enc, enc + dec


@pytest.mark.parametrize("size", [64, 128, 256])
def test_generator_shapes_and_parameter_counts(size):
    gen = UNetGenerator(3, size)
    enc_params, total = expected_unet_params(size)
    assert n_params(gen.encoder) == enc_params
    assert n_params(gen) == total
    x = torch.randn(2, 4, size, size)
    out = gen(x)
    assert out.shape == (2, 3, size, size)
    assert out.abs().max() <= 1
    feats = gen.encoder(x)
    assert [f.shape[1] for f in feats] == [64, 64, 128, 256, 512, 4000]
    assert feats[-1].shape[-2:] == (1, 1) and feats[-2].shape[-1] == size // 32


def test_no_skip_generator_has_the_expected_parameters():
    gen = UNetGenerator(3, 64, skips="none")
    assert n_params(gen) == expected_unet_params(64, skip=False)[1]


def test_hole_predicting_generator_keeps_the_known_pixels():
    gen = UNetGenerator(3, 64, bottleneck_channels=32, skips="none", predict="hole")
    x = torch.randn(2, 4, 64, 64)
    out = gen(x)
    outside = torch.ones(64, 64, dtype=torch.bool)
    outside[16:48, 16:48] = False
    assert torch.equal(out[:, :, outside], x[:, :3][:, :, outside])
    assert not torch.equal(out[:, :, 16:48, 16:48], x[:, :3, 16:48, 16:48])


def test_grayscale_generator():
    gen = create_generator("unet", image_channels=1, image_size=32, bottleneck_channels=16)
    assert gen(torch.randn(2, 2, 32, 32)).shape == (2, 1, 32, 32)


def test_bad_size_and_name_are_clear_errors():
    with pytest.raises(UserError, match="multiple of the U-Net's total stride 32"):
        UNetGenerator(3, 100)
    with pytest.raises(UserError, match="unknown generator"):
        create_generator("vit")


@pytest.mark.parametrize("size", [64, 128, 256])
def test_discriminators_table_2(size):
    d_global = global_discriminator(3, size)
    d_local = local_discriminator(3, size // 2)
    assert d_global(torch.randn(3, 3, size, size)).shape == (3,)
    assert d_local(torch.randn(3, 3, size // 2, size // 2)).shape == (3,)
    widths = [64, 128, 256, 512, 512]
    convs = sum(conv_bn(a, b, 4) for a, b in zip([3] + widths[:-1], widths))
    side = size // 32
    assert n_params(d_global) == convs + 512 * side * side + 1  # Conv2d* with bias
    local_side = side // 2
    assert n_params(d_local) == convs + 512 * local_side * local_side + 1  # no Conv2d*: linear head


def test_local_crop_is_centred_on_the_hole_and_stays_inside():
    mask = torch.zeros(3, 1, 64, 64)
    mask[0, :, 20:30, 30:40] = 1  # centre (25, 35)
    mask[1, :, 0:5, 60:64] = 1  # corner: crop shifted inside
    boxes = hole_boxes(mask, 32)
    assert boxes.tolist() == [[9, 19], [0, 32], [16, 16]]
    crops = crop_boxes(torch.arange(3 * 64 * 64.0).view(3, 1, 64, 64), boxes, 32)
    assert crops.shape == (3, 1, 32, 32)
    assert crops[0, 0, 0, 0] == 9 * 64 + 19


def test_generator_initialisation_does_not_depend_on_the_discriminators():
    """Recorded results of a seed stay rerunnable: the generator takes the first random numbers."""
    from ssl_inpaint.runtime import seed_everything
    from ssl_inpaint.options.pretrain import PretrainConfig
    from ssl_inpaint.models import make_models

    weights = []
    for with_d in (False, True):
        config = PretrainConfig(image_size=32, bottleneck_channels=16, global_d=with_d, local_d=with_d, local_size=32)
        seed_everything(0)
        weights.append(make_models(config, 3).generator.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_whole_map_convolutions_are_the_table_layers_as_matrix_products(bias, channels_last):
    """The bottleneck pair computes what nn.Conv2d / nn.ConvTranspose2d compute, with the same
    state-dict (checkpoints load either way), and gives the same gradients; other shapes run the conv."""
    torch.manual_seed(0)
    fast = (WholeMapConv2d(24, 40, 4, 1, 0, bias=bias), WholeMapConvTranspose2d(40, 24, 4, 1, 0, bias=bias))
    plain = (torch.nn.Conv2d(24, 40, 4, 1, 0, bias=bias), torch.nn.ConvTranspose2d(40, 24, 4, 1, 0, bias=bias))
    for ours, table in zip(fast, plain):
        table.load_state_dict(ours.state_dict())
    x = torch.randn(5, 24, 4, 4)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    outputs, grads = [], []
    for down, up in (fast, plain):
        y = up(down(x))
        assert y.shape == (5, 24, 4, 4)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        outputs.append(y)
        grads.append([p.grad for p in (*down.parameters(), *up.parameters())])
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)
    for ours, table in zip(*grads):
        torch.testing.assert_close(ours, table, rtol=1e-4, atol=1e-5)
    wider, latent_map = torch.randn(2, 24, 6, 6), torch.randn(2, 40, 2, 2)  # not whole-map: the convolutions run
    with torch.no_grad():
        torch.testing.assert_close(fast[0](wider), plain[0](wider))
        torch.testing.assert_close(fast[1](latent_map), plain[1](latent_map))


def test_the_generator_bottleneck_is_a_whole_map_convolution():
    generator = UNetGenerator(3, 128)
    assert type(generator.encoder.bottleneck[0]) is WholeMapConv2d
    assert type(generator.from_bottleneck[0]) is WholeMapConvTranspose2d
    assert generator.encoder.bottleneck[0].weight.shape == (4000, 512, 4, 4)  # Table 1's layer, unchanged
