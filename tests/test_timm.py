"""timm backbones as the pretext encoder, export to plain timm classifiers, timm fine-tuning."""

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from ssl_inpaint.errors import UserError
from ssl_inpaint.models import build_encoder, create_generator
from ssl_inpaint.models.timm_unet import check_encoder_spec
from tests.helpers import decode_maps, disturb_inside_hole, run_ssl

pytestmark = pytest.mark.slow




def pretrain_timm(data: Path, out: Path, name: str, *extra: str) -> Path:
    run_ssl("pretrain", "--data", str(data), "--output-dir", str(out), "--name", name.replace(":", "_"), "--encoder", name,
           "--batch-size", "4", "--val-images", "4", "--max-steps", "2", "--num-workers", "0", *extra)
    return out / name.replace(":", "_")


def check_export_round_trip(run: Path, tmp_path: Path, fmt: str, in_chans: int, size: int) -> None:
    encoder_file = torch.load(run / "encoder.pt", weights_only=True)
    arch = encoder_file["arch"]
    suffix = ".safetensors" if fmt == "safetensors" else ".pth"
    out = tmp_path / f"exported{suffix}"
    run_ssl("export", str(run), "--format", fmt, "-o", str(out), "--num-classes", "7")
    if fmt == "safetensors":
        from safetensors.torch import load_file

        state = load_file(str(out))
    else:
        state = torch.load(out, weights_only=True)
    model = timm.create_model(arch["name"], num_classes=7, in_chans=in_chans, pretrained=False)
    result = model.load_state_dict(state, strict=False)
    classifier = model.get_classifier()
    head = {f"{n}.{p}" for n, m in model.named_modules() if m is classifier for p, _ in m.named_parameters()}
    assert not result.unexpected_keys
    assert head <= set(result.missing_keys)
    assert all(k.startswith(("head.", "fc.", "classifier.")) for k in result.missing_keys), result.missing_keys

    encoder = build_encoder(arch)
    encoder.load_state_dict(encoder_file["state_dict"])
    encoder.eval(), model.eval()
    image = torch.rand(2, in_chans, size, size) * 2 - 1
    with torch.no_grad():
        deepest = encoder(torch.cat([image, torch.zeros_like(image[:, :1])], dim=1))[-1]
        torch.testing.assert_close(model.forward_features(image), deepest, atol=1e-5, rtol=1e-5)
        assert model(image).shape == (2, 7)


@pytest.mark.parametrize("name, fmt", [("timm:resnet18", "timm"), ("timm:convnext_tiny", "safetensors")])
def test_pretrain_export_and_load_into_plain_timm(tiny_data, tmp_path, name, fmt):
    run = pretrain_timm(tiny_data / "coco", tmp_path, name, "--image-size", "64", "--no-global-d")
    check_export_round_trip(run, tmp_path, fmt, in_chans=3, size=64)


def test_one_channel_images(tmp_path):
    from tests.test_data import write_idx

    rng = np.random.default_rng(0)
    for prefix, n in (("train", 24), ("t10k", 8)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    run = pretrain_timm(tmp_path, tmp_path / "runs", "timm:resnet18", "--dataset", "fashion_mnist", "--split", "train",
                        "--image-size", "32", "--no-local-d")
    check_export_round_trip(run, tmp_path, "timm", in_chans=1, size=32)


def test_finetune_timm_classifier_with_every_init(tiny_data, tmp_path):
    run = pretrain_timm(tiny_data / "coco", tmp_path, "timm:resnet18", "--image-size", "64", "--no-global-d")
    weights = tmp_path / "weights.safetensors"
    run_ssl("export", str(run), "--format", "safetensors", "-o", str(weights))
    common = ["finetune", "--dataset", "voc", "--data", str(tiny_data / "VOCdevkit"), "--image-size", "64",
              "--encoder", "timm:resnet18", "--checkpoint", str(run), "--epochs", "1", "--batch-size", "8",
              "--num-workers", "0", "--output-dir", str(tmp_path / "ft")]
    for init in ("pretrained", "random", str(weights)):
        run_ssl(*common, "--init", init)
    names = sorted(p.name for p in (tmp_path / "ft").iterdir())
    assert names == ["voc_finetune_all_pretrained_s0", "voc_finetune_all_random_s0", "voc_finetune_all_weights-weights_s0"]
    metrics = json.loads((tmp_path / "ft/voc_finetune_all_weights-weights_s0/metrics.json").read_text())
    assert metrics["encoder"] == "timm:resnet18" and metrics["init_weights"] == str(weights)


def test_generator_on_timm_encoders_and_clear_errors():
    for name in ("timm:resnet18", "timm:efficientnet_b0"):
        gen = create_generator("unet", encoder=name, image_channels=3, image_size=64)
        assert gen(torch.randn(2, 4, 64, 64)).shape == (2, 3, 64, 64)
    with pytest.raises(UserError, match="timm does not know a model named 'resnet_xyz'"):
        check_encoder_spec("timm:resnet_xyz")
    with pytest.raises(UserError, match="not a multiple of resnet18's total stride 32"):
        create_generator("unet", encoder="timm:resnet18", image_channels=3, image_size=48)
    with pytest.raises(UserError, match="--encoder must be unet or timm"):
        check_encoder_spec("resnet18")


@pytest.mark.parametrize("skips", ["masked", "none"])
def test_timm_decoder_skips_carry_no_hole_information(skips):
    """As the U-Net's masked skips (issue 22): with the deepest stage fixed, changing the timm encoder's
    shallower features inside the hole does not move the output; with ``all`` it does."""
    torch.manual_seed(0)
    generator = create_generator("unet", encoder="timm:resnet18", image_channels=3, image_size=64, skips=skips).eval()
    x = torch.randn(2, 4, 64, 64)
    x[:, 3] = 0
    x[:, 3, 16:48, 16:48] = 1  # a centre hole
    features = generator.encoder(x)
    disturbed = disturb_inside_hole(features, x[:, 3:])
    assert torch.allclose(decode_maps(generator, x, features), decode_maps(generator, x, disturbed))
    plain = create_generator("unet", encoder="timm:resnet18", image_channels=3, image_size=64, skips="all").eval()
    assert not torch.allclose(decode_maps(plain, x, features), decode_maps(plain, x, disturbed))
    if skips == "masked":
        assert len(generator.mask_tokens) == len(features) - 1


def test_timm_generators_refuse_unknown_skips_and_the_unet_only_options():
    from ssl_inpaint.models.factory import ModelOptions

    with pytest.raises(UserError, match="--skips must be all, none or masked"):
        create_generator("unet", encoder="timm:resnet18", image_channels=3, image_size=64, skips="some")
    options = ModelOptions(image_size=64, encoder="timm:resnet18", predict="hole")
    with pytest.raises(UserError, match="--predict hole and --norm none apply to --encoder unet only"):
        options.check_model()


# --- ssl pretrain --init-from (issue 22) ---------------------------------------------------------------

def test_init_from_a_plain_timm_state_dict_computes_the_plain_models_features(tmp_path):
    import timm

    from ssl_inpaint.models.init_from import initialise_encoder

    plain = timm.create_model("resnet18", pretrained=False, num_classes=7).eval()
    torch.save(plain.state_dict(), tmp_path / "resnet18.pth")
    generator = create_generator("unet", encoder="timm:resnet18", image_channels=3, image_size=64).eval()
    line = initialise_encoder(generator, tmp_path / "resnet18.pth")
    assert "hole channel of its first conv at zero" in line
    image = torch.randn(2, 3, 64, 64)
    holed = torch.cat([image, torch.ones(2, 1, 64, 64)], dim=1)  # the hole channel changes nothing: its weights are zero
    torch.testing.assert_close(generator.encoder(holed)[-1], plain.forward_features(image))
    with pytest.raises(UserError, match="resnet50|does not fit|line up"):
        initialise_encoder(create_generator("unet", encoder="timm:resnet50", image_channels=3, image_size=64), tmp_path / "resnet18.pth")


def test_init_from_an_encoder_file_checks_the_architecture(tmp_path):
    from ssl_inpaint.checkpoint import ENCODER_FORMAT
    from ssl_inpaint.models.init_from import initialise_encoder
    from ssl_inpaint.storage import save_atomic

    source = create_generator("unet", image_channels=3, image_size=32, widths=(8, 8, 16, 16, 32), bottleneck_channels=16)
    payload = {"format": ENCODER_FORMAT, "arch": dict(source.encoder.arch), "state_dict": source.encoder.state_dict(), "step": 7}
    save_atomic(payload, tmp_path / "run" / "encoder.pt")
    target = create_generator("unet", image_channels=3, image_size=32, widths=(8, 8, 16, 16, 32), bottleneck_channels=16)
    assert "step 7" in initialise_encoder(target, tmp_path / "run")
    for key, value in source.encoder.state_dict().items():
        assert torch.equal(value, target.encoder.state_dict()[key]), key
    other = create_generator("unet", image_channels=3, image_size=32, widths=(8, 8, 16, 16, 32), bottleneck_channels=32)
    with pytest.raises(UserError, match="holds another encoder \\(bottleneck_channels 16 vs 32\\)"):
        initialise_encoder(other, tmp_path / "run" / "encoder.pt")
    with pytest.raises(UserError, match="no such file"):
        initialise_encoder(other, tmp_path / "missing.pt")
    torch.save({"w": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(UserError, match="is not an ssl encoder.pt; a plain state dict initialises --encoder timm"):
        initialise_encoder(other, tmp_path / "plain.pt")
