"""The pretext levers of issue 11 and the instruments that measure them: the patch mask, masked and
absent skips, MAE's per-patch normalised loss, BatchNorm re-estimation on clean images, the online
representation probe, and the transfer protocol's layer-wise decay, head warm-up and augmentations."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from ssl_inpaint.config import resolve_config
from ssl_inpaint.data.classification import classification_transform, parse_augment
from ssl_inpaint.data.transforms import image_transform
from ssl_inpaint.engine.finetune import layerwise_param_groups, set_encoder_frozen
from ssl_inpaint.options.finetune import FinetuneConfig
from ssl_inpaint.options.pretrain import PretrainConfig
from ssl_inpaint.errors import UserError
from ssl_inpaint.losses import LossWeights, generator_loss, patch_normalised_weight
from ssl_inpaint.masks import MaskOptions, RandomPatches, mask_seed
from ssl_inpaint.models.classifier import EncoderClassifier, encoder_features, feature_dim, reestimate_batchnorm
from ssl_inpaint.models.unet import UNetEncoder, UNetGenerator, mask_skip, masked_batch_norm, visible_cells
from ssl_inpaint.data.classification import LabelledImages
from ssl_inpaint.data.sources import FileListSource
from ssl_inpaint.probe import RepresentationProbe, heldout_probe_subsets, knn_scores, linear_scores, probe_subsets
from tests.helpers import decode_maps, disturb_inside_hole


# --- the patch mask ---------------------------------------------------------------------------------

@pytest.mark.parametrize("size,patch,ratio", [(32, 4, 0.75), (32, 8, 0.6), (30, 4, 0.5), (64, 16, 0.75)])
def test_patch_mask_has_the_asked_ratio_within_one_patch(size, patch, ratio):
    generator = RandomPatches(patch, ratio)
    cells = (-(-size // patch)) ** 2
    for index in range(5):
        mask = generator(size, size, mask_seed(0, 0, index))
        assert mask.shape == (1, size, size) and set(mask.unique().tolist()) <= {0.0, 1.0}
        blocks = [mask[0, r : r + patch, c : c + patch] for r in range(0, size, patch) for c in range(0, size, patch)]
        assert all(b.min() == b.max() for b in blocks)  # whole patches: all hole or all known
        holed_cells = sum(float(b.max()) for b in blocks)
        assert abs(holed_cells - ratio * cells) <= 1


def test_patch_mask_is_resampled_per_image_and_fixed_by_its_seed():
    generator = RandomPatches(4, 0.75)
    a, b = generator(32, 32, mask_seed(0, 0, 1)), generator(32, 32, mask_seed(0, 0, 2))
    assert not torch.equal(a, b)
    assert torch.equal(a, generator(32, 32, mask_seed(0, 0, 1)))


def test_patch_mask_options_are_checked():
    assert isinstance(MaskOptions(mask="patches", patch_size=8, mask_ratio=0.6).mask_generator(), RandomPatches)
    for bad, message in ((dict(patch_size=0), "--patch-size must be in [1, 8192]"), (dict(mask_ratio=1.0), "--mask-ratio must be in (0, 1)"),
                         (dict(mask_ratio=0.0), "--mask-ratio must be in (0, 1)")):
        with pytest.raises(UserError, match=re.escape(message)):
            MaskOptions(mask="patches", **bad).mask_generator()


# --- skips ------------------------------------------------------------------------------------------

def test_mask_skip_replaces_every_position_touching_the_hole_by_the_token():
    feature = torch.randn(2, 5, 8, 8)
    hole = torch.zeros(2, 1, 32, 32)
    hole[0, :, 5, 9] = 1  # one pixel: its 4x4 cell (row 1, column 2) of the 8x8 map is masked
    token = torch.randn(1, 5, 1, 1)
    out = mask_skip(feature, hole, token)
    assert torch.equal(out[0, :, 1, 2], token[0, :, 0, 0])
    keep = torch.ones(2, 8, 8, dtype=torch.bool)
    keep[0, 1, 2] = False
    assert torch.equal(out.permute(0, 2, 3, 1)[keep], feature.permute(0, 2, 3, 1)[keep])


def test_masked_skips_carry_no_hole_information():
    """With the latent fixed, what the decoder gets through masked skips at the hole is the token,
    whatever the encoder computed there: change the encoder's features only inside the hole and the
    output does not move."""
    torch.manual_seed(0)
    generator = UNetGenerator(1, 32, widths=(8, 8, 16, 16, 32), bottleneck_channels=16, skips="masked").eval()
    x = torch.randn(2, 2, 32, 32)
    x[:, 1] = 0
    x[:, 1, 8:24, 8:24] = 1  # a centre hole
    features = generator.encoder(x)
    disturbed = disturb_inside_hole(features, x[:, 1:])
    assert torch.allclose(decode_maps(generator, x, features), decode_maps(generator, x, disturbed))
    plain = UNetGenerator(1, 32, widths=(8, 8, 16, 16, 32), bottleneck_channels=16, skips="all").eval()
    plain.load_state_dict({k: v for k, v in generator.state_dict().items() if "mask_tokens" not in k})
    assert not torch.allclose(decode_maps(plain, x, disturbed), generator(x))  # all skips would have passed the change on


def test_no_skips_generator_decodes_from_the_latent_alone():
    generator = UNetGenerator(1, 32, widths=(8, 8, 16, 16, 32), bottleneck_channels=16, skips="none")
    assert generator(torch.randn(2, 2, 32, 32)).shape == (2, 1, 32, 32)
    assert generator.up_stages[0][0].in_channels == 32  # no concatenated skip


def test_old_saved_configs_with_skip_connections_are_translated():
    assert PretrainConfig.saved_values({"skip_connections": False, "gone": 1})["skips"] == "none"
    assert PretrainConfig.saved_values({"skip_connections": True})["skips"] == "all"
    with pytest.raises(UserError, match="--skips must be one of"):
        resolve_config(PretrainConfig, {"skips": "some"}, {})


# --- the sparse encoder (SparK's sparse convolution and BatchNorm) ----------------------------------

def test_masked_batch_norm_over_all_positions_is_batch_norm():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 6, 6) * 2 + 1
    plain, masked = torch.nn.BatchNorm2d(4), torch.nn.BatchNorm2d(4)
    plain.weight.data.uniform_(0.5, 2)
    masked.load_state_dict(plain.state_dict())
    expected = plain(x)
    out = masked_batch_norm(x, torch.ones(3, 1, 6, 6), masked)
    assert torch.allclose(out, expected, atol=1e-5)
    assert torch.allclose(masked.running_mean, plain.running_mean, atol=1e-6)
    assert torch.allclose(masked.running_var, plain.running_var, atol=1e-5)
    assert int(masked.num_batches_tracked) == 1
    masked.eval(), plain.eval()
    assert torch.allclose(masked_batch_norm(x, torch.zeros(3, 1, 6, 6), masked), plain(x))  # eval: the running statistics


def test_masked_batch_norm_statistics_ignore_hidden_positions():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    visible = (torch.rand(2, 1, 8, 8) > 0.6).float()
    disturbed = torch.where(visible.bool(), x, torch.full_like(x, 1e3))
    first, second = torch.nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3)
    a, b = masked_batch_norm(x, visible, first), masked_batch_norm(disturbed, visible, second)
    keep = visible.bool().expand_as(x)
    assert torch.allclose(a[keep], b[keep], atol=1e-5)
    assert torch.allclose(first.running_mean, second.running_mean) and torch.allclose(first.running_var, second.running_var)
    values = x.permute(1, 0, 2, 3)[:, visible[:, 0].bool()]  # (C, visible positions)
    assert torch.allclose(first.running_mean, 0.1 * values.mean(1), atol=1e-6)
    assert torch.allclose(a[keep].view(-1), ((x - values.mean(1)[:, None, None]) / (values.var(1, unbiased=False)[:, None, None] + 1e-5).sqrt())[keep].view(-1), atol=1e-4)


def test_sparse_stages_zero_the_hole_and_keep_the_encoder_for_transfer():
    torch.manual_seed(0)
    x = torch.randn(2, 2, 32, 32)
    hole = (RandomPatches(8, 0.75)(32, 32, mask_seed(0, 0, 1)) > 0).float()
    x[:, 1:] = hole
    x[:, :1] *= 1 - hole
    sparse = UNetGenerator(1, 32, widths=(8, 8, 16, 16, 32), bottleneck_channels=16, skips="none", sparse_stages=3).train()
    dense = UNetGenerator(1, 32, widths=(8, 8, 16, 16, 32), bottleneck_channels=16, skips="none")
    assert sparse.state_dict().keys() == dense.state_dict().keys()  # the same encoder: transfer is unchanged
    features = sparse.encoder.forward_sparse(x, x[:, 1:], 3)
    for feature in features[:3]:
        hidden = visible_cells(x[:, 1:], feature.shape[-2:]) == 0
        assert hidden.any() and not hidden.all()
        assert torch.count_nonzero(feature * hidden) == 0
    assert sparse(x).shape == (2, 1, 32, 32)
    dense.load_state_dict(sparse.state_dict())
    sparse.eval(), dense.eval()
    assert torch.equal(sparse.encoder(x)[-1], dense.encoder(x)[-1])  # outside the pretext it is the plain encoder


@pytest.mark.parametrize("flags,message", [
    (dict(sparse_stages=4, patch_size=8), "--sparse-stages 4 makes cells of 16 px"),
    (dict(sparse_stages=6), "--sparse-stages must be at most the 5 stages"),
    (dict(sparse_stages=1, encoder="timm:resnet18"), "--sparse-stages applies to --generator unet"),
])
def test_sparse_stages_are_checked(flags, message):
    with pytest.raises(UserError, match=re.escape(message)):
        resolve_config(PretrainConfig, {"mask": "patches", "patch_size": 4, **flags}, {}).validate()


# --- MAE's per-patch normalised loss ----------------------------------------------------------------

def test_norm_pix_loss_equals_maes_loss_on_normalised_targets():
    torch.manual_seed(0)
    target, prediction = torch.rand(2, 3, 8, 8) * 2 - 1, torch.rand(2, 3, 8, 8) * 2 - 1
    mask = torch.ones(2, 1, 8, 8)
    ours = generator_loss(prediction, target, mask, LossWeights(0, 1, 0, 0, norm_pix_patch=4))["rec_hole"]
    # MAE: per patch (all channels), target normalised by its mean and variance; the prediction in the
    # same coordinates is (prediction - mean) / std.
    def patches(x):
        return x.unfold(2, 4, 4).unfold(3, 4, 4).permute(0, 2, 3, 1, 4, 5).reshape(2, 4, -1)

    t, p = patches(target), patches(prediction)
    mean, var = t.mean(-1, keepdim=True), t.var(-1, keepdim=True, unbiased=False)
    std = (var + 1e-2).sqrt()
    mae = (((p - mean) / std - (t - mean) / std) ** 2).mean()
    assert torch.allclose(ours, mae, rtol=1e-5)


def test_norm_pix_weight_is_bounded_on_flat_patches():
    flat = -torch.ones(1, 1, 8, 8)
    assert torch.allclose(patch_normalised_weight(flat, 4), torch.full((1, 1, 8, 8), 100.0))
    with pytest.raises(UserError, match="--norm-pix-loss"):
        resolve_config(PretrainConfig, {"norm_pix_loss": True, "recon_loss": "l1"}, {})


# --- BatchNorm on clean images ----------------------------------------------------------------------

def test_reestimated_batchnorm_holds_the_clean_images_statistics():
    torch.manual_seed(0)
    encoder = UNetEncoder(2, 32, widths=(4, 4, 8, 8, 8), bottleneck_channels=8)
    images = [torch.randn(16, 1, 32, 32) for _ in range(3)]
    encoder.eval()
    seen = reestimate_batchnorm(encoder, iter(images))
    assert seen == 48 and not encoder.training
    first_conv, first_bn = encoder.stages[0][0], encoder.stages[0][1]
    with torch.no_grad():
        out = first_conv(torch.cat([torch.cat(images), torch.zeros(48, 1, 32, 32)], 1))
    # Equal-sized batches: the average of the batch means is the mean over all images.
    assert torch.allclose(first_bn.running_mean, out.mean(dim=(0, 2, 3)), atol=1e-5)
    assert first_bn.momentum == 0.1  # restored


# --- the online probe --------------------------------------------------------------------------------

def test_knn_and_linear_probe_are_perfect_on_a_separable_case():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16)) * 10
    labels = np.repeat(np.arange(4), 30)
    features = centres[labels] + rng.normal(size=(120, 16))
    train, test = np.arange(0, 120, 2), np.arange(1, 120, 2)
    knn = knn_scores(features[train], labels[train], features[test], 20, False, 4)
    assert (knn.argmax(1) == labels[test]).all()
    linear = linear_scores(features[train], labels[train], features[test], False)
    assert (linear.argmax(1) == labels[test]).all()


def test_knn_scores_are_the_neighbours_votes():
    train = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    scores = knn_scores(train, np.array([0, 0, 1]), np.array([[1.0, 0.05]]), 2, False, 2)
    assert scores[0].round().tolist() == [2.0, 0.0]


def fake_labelled(count: int, classes: int) -> LabelledImages:
    """Labelled images whose files are never read (subsets only pick indices)."""
    paths = [Path(f"image{i}.png") for i in range(count)]
    return LabelledImages(FileListSource(paths, "fake"), np.arange(count) % classes, tuple("abcde"[:classes]), False)


def test_heldout_probe_fits_and_scores_disjoint_training_images():
    train = fake_labelled(90, 3)
    fit, heldout = heldout_probe_subsets(train, images=30)
    fit_ids, heldout_ids = set(fit.source.indices), set(heldout.source.indices)
    assert len(fit_ids) == 30 and len(heldout_ids) == 30 and not fit_ids & heldout_ids
    assert np.bincount(fit.targets).tolist() == [10, 10, 10]  # the fitted images stratified as before
    assert fit_ids == set(probe_subsets(train, fake_labelled(5, 3), 30)[0].source.indices)  # the same fitted images
    assert heldout_ids == set(heldout_probe_subsets(train, images=30)[1].source.indices)  # fixed by the seed
    _, fewer = heldout_probe_subsets(fake_labelled(40, 3), images=30)
    assert len(fewer) == 10  # what is left after the fitted ones


def test_heldout_probe_with_nothing_left_is_refused():
    with pytest.raises(UserError, match="none is left to score on; lower --probe-images"):
        heldout_probe_subsets(fake_labelled(30, 3), images=30)


def test_probe_on_an_encoder_that_separates_the_classes():
    """Images whose class is their brightness: the encoder's pooled features separate them, so the
    probe scores 100 %, and it leaves the encoder's mode and weights as they were."""
    torch.manual_seed(0)
    labels = np.repeat(np.arange(2), 20)
    images = torch.from_numpy(np.where(labels == 0, -0.8, 0.8)).float().view(-1, 1, 1, 1).expand(-1, 1, 32, 32)
    images = images + 0.01 * torch.randn(40, 1, 32, 32)
    encoder = UNetEncoder(2, 32, widths=(4, 4, 8, 8, 8), bottleneck_channels=8, norm="none")
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    encoder.train()
    probe = RepresentationProbe(images[::2], labels[::2], images[1::2], labels[1::2], False, 2, "multi", "clean")
    results = probe(encoder)
    assert results["probe/knn_top1"] == 1.0 and results["probe/linear_top1"] == 1.0
    assert encoder.training and all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())


def test_multi_features_concatenate_the_deepest_stages():
    encoder = UNetEncoder(2, 32, widths=(4, 4, 8, 16, 32), bottleneck_channels=64)
    assert feature_dim(encoder, "multi") == 8 + 16 + 32
    assert encoder_features(encoder.eval(), torch.randn(2, 1, 32, 32), "multi").shape == (2, 56)
    assert EncoderClassifier(encoder, 10, "multi").feature_dim == 56


# --- the transfer protocol -------------------------------------------------------------------------

def test_layer_decay_scales_each_stage_and_keeps_the_head_at_lr():
    model = EncoderClassifier(UNetEncoder(2, 32, widths=(4, 4, 8, 8, 8), bottleneck_channels=8), 10, "pooled")
    config = FinetuneConfig(layer_decay=0.5, init="random")
    groups = layerwise_param_groups(model, config)
    scales = [g["lr_scale"] for g in groups]
    assert scales == [0.5**6, 0.5**5, 0.5**4, 0.5**3, 0.5**2, 0.5, 1.0]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert len(layerwise_param_groups(model, FinetuneConfig(init="random"))) == 1


def test_head_warmup_freezes_the_encoder_and_its_statistics():
    model = EncoderClassifier(UNetEncoder(2, 32, widths=(4, 4, 8, 8, 8), bottleneck_channels=8), 10, "pooled")
    model.train()
    set_encoder_frozen(model, True)
    assert not model.encoder.training and not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    set_encoder_frozen(model, False)
    assert all(p.requires_grad for p in model.encoder.parameters())
    with pytest.raises(UserError, match="--head-warmup-epochs"):
        resolve_config(FinetuneConfig, {"init": "random", "head_warmup_epochs": 5, "epochs": 5}, {})


def test_default_augmentation_is_the_pretext_view_and_others_parse():
    from PIL import Image

    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30), dtype=np.uint8))
    torch.manual_seed(3)
    ours = classification_transform(32, parse_augment("crop,flip"))(picture)
    torch.manual_seed(3)
    assert torch.equal(ours, image_transform(32, train=True)(picture))
    heavy = classification_transform(32, parse_augment("pad_crop,flip,erase"))(picture)
    assert heavy.shape == (1, 32, 32) and heavy.min() >= -1 and heavy.max() <= 1
    assert parse_augment("none") == ()
    with pytest.raises(UserError, match="--augment takes"):
        parse_augment("flip,rotate")


# --- the decoder's size ---------------------------------------------------------------------------

@pytest.mark.parametrize("skips", ["none", "all"])
def test_decoder_scale_sizes_the_decoder_and_leaves_the_encoder(skips):
    widths = (8, 8, 16, 16, 32)
    light = UNetGenerator(1, 32, widths=widths, bottleneck_channels=16, skips=skips, decoder_scale=0.5)
    plain = UNetGenerator(1, 32, widths=widths, bottleneck_channels=16, skips=skips)
    assert light.encoder.state_dict().keys() == plain.encoder.state_dict().keys()
    assert all(a.shape == b.shape for a, b in zip(light.encoder.state_dict().values(), plain.encoder.state_dict().values()))
    assert light.from_bottleneck[0].out_channels == 16 and [s[0].out_channels for s in light.up_stages] == [8, 8, 4, 4]
    assert sum(p.numel() for p in light.parameters()) < sum(p.numel() for p in plain.parameters())
    assert light(torch.randn(2, 2, 32, 32)).shape == (2, 1, 32, 32)


def test_decoder_scale_is_for_the_unet_generator():
    with pytest.raises(UserError, match="--decoder-scale sizes the decoder of --generator unet"):
        resolve_config(PretrainConfig, {"decoder_scale": 0.5, "encoder": "timm:resnet18"}, {}).validate()
