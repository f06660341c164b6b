"""PixelCNN++ (seed 002): the discretised logistic mixture likelihood against an independent
computation, the model's causality, and the lower-half sampler."""

import math

import pytest
import torch

from ssl_inpaint.models.pixelcnn import mixture_channels, mixture_log_prob
from ssl_inpaint.models.pixelcnn import PixelCNNPP, quantize, sample_lower_half

GRID = torch.arange(256, dtype=torch.float64) * 2 / 255 - 1  # the 256 levels in [-1, 1]


def exact_bin_probs(mean: float, scale: float) -> torch.Tensor:
    """P(level) of a logistic(mean, scale) rounded to the grid, in float64: the mass between the
    midpoints around each level (everything below the first / above the last level included), as a
    difference of CDFs below the mean and of survival functions above it, so neither tail cancels."""
    edges = torch.cat([torch.tensor([-math.inf]), (GRID[:-1] + GRID[1:]) / 2, torch.tensor([math.inf])])
    cdf = torch.sigmoid((edges - mean) / scale)
    survival = torch.sigmoid((mean - edges) / scale)
    return torch.where(GRID < mean, cdf[1:] - cdf[:-1], survival[:-1] - survival[1:])


def one_component_params(mean: float, log_scale: float, shape=(1, 1, 16, 16)) -> torch.Tensor:
    """Network output for 1 channel, 1 component: logit, mean, log-scale at every pixel."""
    params = torch.zeros(shape[0], mixture_channels(1, 1), *shape[2:])
    params[:, 1], params[:, 2] = mean, log_scale
    return params


@pytest.mark.parametrize("mean, log_scale", [(0.0, -3.0), (0.3, -5.0), (-0.95, -4.0), (0.99, -2.0), (2.0, -6.5)])
def test_likelihood_of_one_logistic_equals_the_exact_bin_masses(mean, log_scale):
    x = GRID.float().view(1, 1, 16, 16)  # all 256 levels, one per pixel
    log_p = mixture_log_prob(x, one_component_params(mean, log_scale)).flatten().double()
    exact = exact_bin_probs(mean, math.exp(log_scale))
    assert exact.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-4)
    significant = exact > 1e-30  # float32 logs of vanishing masses are only relatively accurate
    torch.testing.assert_close(log_p[significant], exact[significant].log(), rtol=1e-4, atol=1e-4)


def test_mixture_weights_and_channel_coupling():
    # two components, weights 0.25 / 0.75: P = 0.25 P1 + 0.75 P2
    params = torch.zeros(1, mixture_channels(1, 2), 16, 16)
    params[:, 0], params[:, 1] = 0.0, math.log(3.0)
    params[:, 2], params[:, 3] = -0.5, 0.5
    params[:, 4], params[:, 5] = -3.0, -4.0
    x = GRID.float().view(1, 1, 16, 16)
    mixed = 0.25 * exact_bin_probs(-0.5, math.exp(-3.0)) + 0.75 * exact_bin_probs(0.5, math.exp(-4.0))
    torch.testing.assert_close(mixture_log_prob(x, params).flatten().double().exp(), mixed, rtol=1e-4, atol=1e-6)

    # RGB, one component: green's mean moves by c * red; with red = r the green marginal is the
    # logistic at mean_g + tanh(c_raw) * r, and the blue one at mean_b (its coefficients are 0)
    params = torch.zeros(1, mixture_channels(3, 1), 16, 16)
    params[:, 1:4] = torch.tensor([0.1, -0.2, 0.0]).view(1, 3, 1, 1)  # means r, g, b
    params[:, 4:7] = -3.0  # log-scales
    params[:, 7] = 1.0  # raw coefficient green <- red
    red, blue = 0.4, 0.0
    x = torch.stack([torch.full((16, 16), red), GRID.float().view(16, 16), torch.full((16, 16), blue)]).unsqueeze(0)
    x = quantize(x)
    joint = mixture_log_prob(x, params).flatten().double().exp()
    red_q, blue_q = float(x[0, 0, 0, 0]), float(x[0, 2, 0, 0])
    p_red = exact_bin_probs(0.1, math.exp(-3.0))[GRID.sub(red_q).abs().argmin()]
    p_blue = exact_bin_probs(0.0, math.exp(-3.0))[GRID.sub(blue_q).abs().argmin()]
    p_green = exact_bin_probs(-0.2 + math.tanh(1.0) * red_q, math.exp(-3.0))
    torch.testing.assert_close(joint, p_red * p_green * p_blue, rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("channels", [1, 3])
def test_no_output_depends_on_its_own_or_a_later_pixel(channels):
    torch.manual_seed(0)
    model = PixelCNNPP(channels, filters=8, blocks=1, components=2, dropout=0.5).eval()
    side = 8
    x = quantize(torch.rand(1, channels, side, side) * 2 - 1)
    with torch.no_grad():
        base = model(x)
    for k in range(side * side):
        row, col = divmod(k, side)
        perturbed = x.clone()
        perturbed[:, :, row, col] = -perturbed[:, :, row, col] + 0.5  # every channel of pixel k
        with torch.no_grad():
            changed = (model(perturbed) - base).abs().amax(dim=1).flatten() > 0
        first = int(changed.nonzero().min()) if changed.any() else side * side
        assert first > k, f"output at raster position {first} depends on pixel {k}"
        if k < side * side - 1:
            assert changed[k + 1 :].any(), "later pixels should see pixel k (the model is not trivially blind)"
    with torch.no_grad():  # what the sampler relies on: rows below cannot change the rows above
        torch.testing.assert_close(model(x[:, :, :4]), base[:, :, :4], rtol=0, atol=1e-6)  # float rounding only


def test_sampling_fills_the_lower_half_on_the_grid_and_keeps_the_upper_half():
    torch.manual_seed(0)
    model = PixelCNNPP(3, filters=8, blocks=1, components=2, dropout=0.0).eval()
    images = quantize(torch.rand(2, 3, 8, 8) * 2 - 1)
    generator = torch.Generator().manual_seed(1)
    sampled = sample_lower_half(model, images, generator)
    assert torch.equal(sampled[:, :, :4], images[:, :, :4])
    assert torch.equal(quantize(sampled), sampled) and sampled.abs().max() <= 1
    assert not torch.equal(sampled[:, :, 4:], images[:, :, 4:])
    again = sample_lower_half(model, images, torch.Generator().manual_seed(1))
    assert torch.equal(sampled, again)  # seeded


@pytest.mark.slow
def test_an_interrupted_run_resumes_exactly_and_refuses_changed_settings(tiny_data, tmp_path):
    from ssl_inpaint.checkpoint import PIXELCNN_FORMAT, load_checkpoint
    from ssl_inpaint.errors import UserError
    from tests.helpers import run_ssl

    small = ["pixelcnn", "--dataset", "folder", "--data", str(tiny_data / "images"), "--image-size", "16", "--filters", "8",
             "--blocks", "1", "--components", "2", "--batch-size", "2", "--val-images", "2", "--sample-images", "1",
             "--sample-every", "100", "--num-workers", "0", "--output-dir", str(tmp_path)]
    run_ssl(*small, "--name", "straight", "--max-steps", "4")
    run_ssl(*small, "--name", "resumed", "--max-steps", "2")  # stops mid-epoch, as a preempted run would
    run_ssl(*small, "--name", "resumed", "--max-steps", "4")
    straight, resumed = (load_checkpoint(tmp_path / name / "checkpoints/last.pt", PIXELCNN_FORMAT) for name in ("straight", "resumed"))
    assert straight["step"] == resumed["step"] == 4
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    with pytest.raises(UserError, match=r"cannot resume .*--lr 0.001 -> 0.01"):
        run_ssl(*small, "--name", "resumed", "--max-steps", "4", "--lr", "0.01")
    with pytest.raises(UserError, match="--no-resume was given"):
        run_ssl(*small, "--name", "resumed", "--no-resume")
