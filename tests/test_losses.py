import math

import torch
import torch.nn.functional as F

from ssl_inpaint.gan_step import Optimizers, composite, frozen, train_step
from ssl_inpaint.models import InpaintingModels
from ssl_inpaint.losses import LossWeights, discriminator_loss, generator_loss
from ssl_inpaint.masks import apply_mask
from ssl_inpaint.models import UNetGenerator, crop_boxes, global_discriminator, hole_boxes, local_discriminator


def test_generator_loss_weighting():
    target = torch.zeros(1, 3, 4, 4)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 1  # top half is the hole
    pred = torch.zeros_like(target)
    pred[..., :2, :] = 2.0  # hole error 2 -> MSE 4
    pred[..., 2:, :] = 1.0  # known error 1 -> MSE 1
    logits_g, logits_l = torch.tensor([0.0, 1.0]), torch.tensor([-2.0])
    w = LossWeights(known=0.9, hole=0.1, adv_global=0.5, adv_local=0.25)
    terms = generator_loss(pred, target, mask, w, "mse", logits_g, logits_l)
    assert math.isclose(terms["rec_known"].item(), 1.0)
    assert math.isclose(terms["rec_hole"].item(), 4.0)
    adv_g = F.softplus(-logits_g).mean().item()  # -log sigmoid(x)
    adv_l = F.softplus(-logits_l).mean().item()
    assert math.isclose(terms["adv_global"].item(), adv_g, rel_tol=1e-6)
    expected = 0.9 * 1 + 0.1 * 4 + 0.5 * adv_g + 0.25 * adv_l
    assert math.isclose(terms["total"].item(), expected, rel_tol=1e-6)
    l1 = generator_loss(pred, target, mask, w, "l1")
    assert math.isclose(l1["total"].item(), 0.9 * 1 + 0.1 * 2, rel_tol=1e-6) and "adv_global" not in l1


def test_discriminator_loss_is_bce():
    real, fake = torch.tensor([3.0]), torch.tensor([-1.0])
    expected = -math.log(torch.sigmoid(real).item()) - math.log(1 - torch.sigmoid(fake).item())
    assert math.isclose(discriminator_loss(real, fake).item(), expected, rel_tol=1e-6)


def small_models(norm="batch"):
    torch.manual_seed(0)
    return InpaintingModels(
        generator=UNetGenerator(3, 64, bottleneck_channels=32, norm=norm),
        global_d=global_discriminator(3, 64, norm),
        local_d=local_discriminator(3, 32, norm),
        local_size=32,
    )


def adam(models, lr_g, lr_d):
    d_params = [p for d in models.discriminators for p in d.parameters()]
    return Optimizers(
        torch.optim.Adam(models.generator.parameters(), lr=lr_g), torch.optim.Adam(d_params, lr=lr_d),
        torch.amp.GradScaler("cpu", enabled=False), torch.amp.GradScaler("cpu", enabled=False),
    )


def batch():
    torch.manual_seed(1)
    image = torch.rand(4, 3, 64, 64) * 2 - 1
    mask = torch.zeros(4, 1, 64, 64)
    mask[..., 16:48, 16:48] = 1
    return {"image": image, "mask": mask, "input": apply_mask(image, mask, torch.zeros(3))}


def test_adversarial_generator_step_leaves_no_gradient_in_the_discriminators():
    models, b = small_models(), batch()
    completed = composite(b["image"], models.generator(b["input"]), b["mask"])
    boxes = hole_boxes(b["mask"], 32)
    with frozen(models.global_d, models.local_d):
        loss = -models.global_d(completed).mean() - models.local_d(crop_boxes(completed, boxes, 32)).mean()
    loss.backward()
    assert all(p.grad is None for d in models.discriminators for p in d.parameters())
    assert all(p.grad is not None for p in models.generator.parameters())
    assert all(p.requires_grad for d in models.discriminators for p in d.parameters())  # restored


def test_train_step_discriminator_grads_come_from_the_discriminator_loss_only():
    """After a joint step, D's gradients equal those of the D loss alone (lr 0 keeps weights fixed)."""
    models, b = small_models(), batch()
    stats = train_step(models, [b], adam(models, 0.0, 0.0), LossWeights(0.9, 0.1, 1.0, 1.0), "mse", "joint")
    assert {"loss/g_adv_global", "loss/g_adv_local", "loss/d_global", "d/local_fake"} <= set(stats)
    after_step = [p.grad.clone() for d in models.discriminators for p in d.parameters()]

    for d in models.discriminators:
        d.zero_grad(set_to_none=True)
    with torch.no_grad():
        completed = composite(b["image"], models.generator(b["input"]), b["mask"])
    boxes = hole_boxes(b["mask"], 32)
    loss = discriminator_loss(models.global_d(b["image"]), models.global_d(completed)) + discriminator_loss(
        models.local_d(crop_boxes(b["image"], boxes, 32)), models.local_d(crop_boxes(completed, boxes, 32))
    )
    loss.backward()
    reference = [p.grad for d in models.discriminators for p in d.parameters()]
    for got, want in zip(after_step, reference):
        torch.testing.assert_close(got, want)


def test_reconstruction_phase_touches_only_the_generator():
    models, b = small_models(), batch()
    d_before = [p.clone() for d in models.discriminators for p in d.parameters()]
    opts = adam(models, 1e-3, 1e-3)
    stats = train_step(models, [b], opts, LossWeights(), "mse", "reconstruction")
    assert "loss/d_global" not in stats and "loss/g_adv_global" not in stats
    assert all(torch.equal(a, p) for a, p in zip(d_before, (p for d in models.discriminators for p in d.parameters())))
    g_before = [p.clone() for p in models.generator.parameters()]
    stats = train_step(models, [b], opts, LossWeights(), "mse", "discriminator")
    assert "loss/g_total" not in stats and "loss/d_local" in stats
    assert all(torch.equal(a, p) for a, p in zip(g_before, models.generator.parameters()))


def test_accumulated_micro_batches_give_the_gradients_of_the_whole_batch():
    b = batch()
    halves = [{k: v[:2] for k, v in b.items()}, {k: v[2:] for k, v in b.items()}]
    grads = []
    for micro in ([b], halves):
        models = small_models(norm="none")  # BatchNorm statistics would differ between the halves
        train_step(models, micro, adam(models, 0.0, 0.0), LossWeights(0.9, 0.1, 1.0, 1.0), "mse", "joint")
        grads.append([p.grad.clone() for m in (models.generator, *models.discriminators) for p in m.parameters()])
    for whole, accumulated in zip(*grads):
        torch.testing.assert_close(whole, accumulated, atol=1e-6, rtol=1e-4)
