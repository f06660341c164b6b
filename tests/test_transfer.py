"""Transfer: VOC parsing, AP, label budgets, encoder round trip, end-to-end finetune + compare."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn
from sklearn.metrics import average_precision_score, precision_recall_curve

from ssl_inpaint.storage import save_atomic
from ssl_inpaint.config import resolve_config
from ssl_inpaint.data.classification import (
    VOC_CLASSES,
    label_budget,
    voc_classification,
)
from ssl_inpaint.engine.compare import collect, find_runs
from ssl_inpaint.engine.finetune import build_classifier
from ssl_inpaint.options.finetune import FinetuneConfig
from ssl_inpaint.errors import UserError
from ssl_inpaint.metrics import mean_average_precision, voc_average_precision
from tests.helpers import run_ssl

REPO = Path(__file__).resolve().parents[1]




# --- VOC parsing -------------------------------------------------------------------------------


def test_voc_targets_and_difficult_flags_from_xml_match_the_imagesets(tiny_data):
    xml = voc_classification(tiny_data / "VOCdevkit", "2007", "trainval", labels="xml")
    lists = voc_classification(tiny_data / "VOCdevkit", "2007", "trainval", labels="imagesets")
    assert xml.targets.shape == (60, 20) and xml.multilabel
    np.testing.assert_array_equal(xml.targets, lists.targets)
    np.testing.assert_array_equal(xml.ignore, lists.ignore)
    assert xml.ignore.any(), "the generated data has difficult-only classes"
    assert (xml.targets.sum(axis=1) >= 1).all()
    assert (xml.targets[xml.ignore] == 1).all()  # ignored entries are present-but-difficult


def test_voc_difficult_rule_on_a_hand_written_annotation(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2007"
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "test.txt").write_text("000001\n")

    def obj(name, difficult):
        return f"<object><name>{name}</name><difficult>{difficult}</difficult></object>"

    (root / "Annotations" / "000001.xml").write_text(
        "<annotation>" + obj("dog", 1) + obj("cat", 1) + obj("cat", 0) + obj("person", 0) + "</annotation>"
    )
    labelled = voc_classification(tmp_path / "VOCdevkit", "2007", "test")
    present = {VOC_CLASSES[k] for k in np.flatnonzero(labelled.targets[0])}
    ignored = {VOC_CLASSES[k] for k in np.flatnonzero(labelled.ignore[0])}
    assert present == {"dog", "cat", "person"}
    assert ignored == {"dog"}  # cat also has a non-difficult instance


# --- AP ----------------------------------------------------------------------------------------


def test_ap_hand_computed():
    # ranking: P N P N  -> precision at the hits 1, 2/3; envelope area = 0.5*1 + 0.5*2/3
    assert voc_average_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(0.5 + 1 / 3)
    # N P P: precisions 1/2, 2/3 -> the envelope lifts the first to 2/3
    assert voc_average_precision([0.9, 0.8, 0.7], [0, 1, 1]) == pytest.approx(2 / 3)
    # the difficult positive ranked first is dropped, not counted as a hit or a miss
    assert voc_average_precision([0.95, 0.9, 0.8], [1, 0, 1], ignore=[True, False, False]) == pytest.approx(0.5)
    assert np.isnan(voc_average_precision([0.1, 0.2], [0, 0]))


def test_ap_against_scikit_learn():
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores, targets = rng.random(200), rng.random(200) < 0.3
        precision, recall, _ = precision_recall_curve(targets, scores)
        order = np.argsort(recall)
        envelope = np.maximum.accumulate(precision[order][::-1])[::-1]
        expected = float(np.sum(np.diff(recall[order]) * envelope[1:]))
        ours = voc_average_precision(scores, targets)
        assert ours == pytest.approx(expected, abs=1e-12)
        assert ours >= average_precision_score(targets, scores) - 1e-12  # the envelope only lifts precision
    monotone = voc_average_precision([0.9, 0.8, 0.7, 0.1], [1, 1, 0, 0])
    assert monotone == pytest.approx(average_precision_score([1, 1, 0, 0], [0.9, 0.8, 0.7, 0.1]))
    mean, per_class = mean_average_precision(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([[1, 0], [0, 0]]))
    assert mean == 1.0 and np.isnan(per_class[1])  # a class without positives is left out of the mean


# --- label budgets -----------------------------------------------------------------------------


def test_label_subsets_are_stratified_and_deterministic(tiny_data):
    voc = voc_classification(tiny_data / "VOCdevkit", "2007", "trainval")
    a = label_budget(voc, data_seed=0, per_class=2)
    assert np.array_equal(a, label_budget(voc, data_seed=0, per_class=2))
    assert not np.array_equal(a, label_budget(voc, data_seed=1, per_class=2))
    positives = ((voc.targets[a] > 0) & ~voc.ignore[a]).sum(axis=0)
    assert (positives >= 2).all()
    assert len(label_budget(voc, 0, fraction=1.0)) == len(voc)
    with pytest.raises(UserError, match="either"):
        label_budget(voc, 0, per_class=1, fraction=0.5)


def test_multiclass_budget_takes_exactly_n_per_class(tmp_path):
    from ssl_inpaint.data.classification import LabelledImages
    from ssl_inpaint.data.sources import FileListSource

    targets = np.repeat(np.arange(4), 25)
    labelled = LabelledImages(FileListSource([Path(f"{i}.png") for i in range(100)], "x"), targets, tuple("abcd"), False)
    chosen = label_budget(labelled, data_seed=3, per_class=5)
    assert np.bincount(targets[chosen]).tolist() == [5, 5, 5, 5]
    chosen = label_budget(labelled, data_seed=3, fraction=0.2)
    assert np.bincount(targets[chosen]).tolist() == [5, 5, 5, 5]


# --- encoder round trip ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pretrain_run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("pre")
    run_ssl("pretrain", "--dataset", "coco", "--data", str(tiny_data / "coco"), "--output-dir", str(out), "--name", "p",
           "--image-size", "64", "--bottleneck-channels", "64", "--batch-size", "4", "--val-images", "4",
           "--max-steps", "3", "--num-workers", "0", "--no-global-d")
    return out / "p"


def finetune_config(tiny_data, pretrain_run, **overrides) -> FinetuneConfig:
    base = dict(dataset="voc", data=str(tiny_data / "VOCdevkit"), image_size=64, checkpoint=str(pretrain_run))
    return resolve_config(FinetuneConfig, {**base, **overrides}, {})


@pytest.mark.slow
def test_encoder_round_trip_and_random_init(tiny_data, pretrain_run):
    pretext = torch.load(pretrain_run / "checkpoints/last.pt", weights_only=True)["generator"]
    model = build_classifier(finetune_config(tiny_data, pretrain_run), 20, 3)
    loaded = model.state_dict()
    encoder_keys = [k for k in loaded if k.startswith("encoder.")]
    assert encoder_keys and all(k.startswith("head.") for k in set(loaded) - set(encoder_keys))
    for key in encoder_keys:
        torch.testing.assert_close(loaded[key], pretext[key])  # same names in the generator
    random = build_classifier(finetune_config(tiny_data, pretrain_run, init="random"), 20, 3).state_dict()
    assert random.keys() == loaded.keys()
    assert not torch.equal(random["encoder.stages.0.0.weight"], loaded["encoder.stages.0.0.weight"])


@pytest.mark.slow
def test_mismatched_or_foreign_encoders_are_clear_errors(tiny_data, pretrain_run, tmp_path):
    with pytest.raises(UserError, match="--features latent needs --image-size 64, the pretraining size"):
        build_classifier(finetune_config(tiny_data, pretrain_run, image_size=128), 20, 3)
    payload = torch.load(pretrain_run / "encoder.pt", weights_only=True)
    payload["state_dict"]["stages.0.0.weight"] = torch.zeros(64, 4, 3, 3)
    save_atomic(payload, tmp_path / "bad.pt")
    with pytest.raises(UserError, match="does not fit this model.*stages.0.0.weight"):
        build_classifier(finetune_config(tiny_data, tmp_path / "bad.pt"), 20, 3)
    del payload["state_dict"]["stages.0.0.weight"]
    save_atomic(payload, tmp_path / "missing.pt")
    with pytest.raises(UserError, match="missing \\['encoder.stages.0.0.weight'\\]"):
        build_classifier(finetune_config(tiny_data, tmp_path / "missing.pt"), 20, 3)
    save_atomic({"format": "something.else"}, tmp_path / "foreign.pt")
    with pytest.raises(UserError, match="not a ssl_inpaint.encoder file"):
        build_classifier(finetune_config(tiny_data, tmp_path / "foreign.pt"), 20, 3)
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable ssl_inpaint checkpoint"):
        build_classifier(finetune_config(tiny_data, tmp_path / "garbage.pt"), 20, 3)


# --- end to end --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["finetune", "linear", "svm"])
def test_finetune_both_inits_then_compare(tiny_data, pretrain_run, tmp_path, mode):
    for init in ("pretrained", "random"):
        run_ssl("finetune", "--dataset", "voc", "--data", str(tiny_data / "VOCdevkit"), "--year", "2007",
               "--train-split", "trainval", "--test-split", "test", "--image-size", "64", "--init", init,
               "--checkpoint", str(pretrain_run), "--mode", mode, "--epochs", "2", "--batch-size", "8",
               "--labels-per-class", "2", "--seeds", "0,1", "--num-workers", "0", "--output-dir", str(tmp_path))
    runs = find_runs([str(tmp_path / "*")])
    assert len(runs) == 4
    metrics = json.loads((tmp_path / f"voc_{mode}_2-per-class_pretrained_s1/metrics.json").read_text())
    assert metrics["metric"] == "mAP" and 0 <= metrics["value"] <= 1
    assert set(metrics["per_class"]) == set(VOC_CLASSES)
    assert metrics["value"] == pytest.approx(np.nanmean(list(metrics["per_class"].values())))
    same_images = {json.loads((r / "metrics.json").read_text())["n_train"] for r in runs}
    assert len(same_images) == 1
    (row,) = collect(runs)
    assert row.pretrain == pretrain_run.name
    assert set(row.values) == {"pretrained", "random"} and set(row.values["random"]) == {0, 1}
    result = run_ssl("compare", str(tmp_path / "voc_*"), "--output", str(tmp_path / "cmp/table.md"),
                    "--logdir", str(tmp_path / "cmp"))
    table = (tmp_path / "cmp/table.md").read_text()
    mean_pre = np.mean(list(row.values["pretrained"].values())) * 100
    assert f"{mean_pre:.2f} ±" in table and mode in result.output
    assert (tmp_path / "cmp/table.png").is_file()


def write_tiny_fashion_mnist(folder: Path) -> None:
    """60 training and 30 test images of noise in Fashion-MNIST's idx files, labels cycling 0-9."""
    from tests.test_data import write_idx

    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60), ("t10k", 30)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)


@pytest.mark.slow
def test_fashion_mnist_multiclass_top1(tmp_path):
    write_tiny_fashion_mnist(tmp_path)
    run_ssl("finetune", "--dataset", "fashion_mnist", "--data", str(tmp_path), "--image-size", "32", "--init", "random", "--bottleneck-channels", "32",
           "--labels-per-class", "3", "--epochs", "1", "--batch-size", "10", "--num-workers", "0",
           "--output-dir", str(tmp_path / "runs"))
    metrics = json.loads((tmp_path / "runs/fashion_mnist_finetune_3-per-class_random_s0/metrics.json").read_text())
    assert metrics["metric"] == "top1" and metrics["n_train"] == 30 and metrics["n_test"] == 30
    assert (metrics["protocol"]["train_split"], metrics["protocol"]["test_split"]) == ("train", "test")  # the dataset's own


@pytest.mark.parametrize("dataset,splits", [("voc", ("trainval", "test")), ("cifar10", ("train", "test")), ("folder", ("train", "test"))])
def test_transfer_splits_default_to_the_datasets_own_and_flags_win(dataset, splits):
    flags = {"dataset": dataset, "init": "random"}
    config = resolve_config(FinetuneConfig, flags, {})
    assert (config.train_split, config.test_split) == splits
    config = resolve_config(FinetuneConfig, flags, {"train_split": "a", "test_split": "val"})
    assert (config.train_split, config.test_split) == ("a", "val")


def test_finetune_without_checkpoint_for_pretrained_init_is_a_clear_error():
    with pytest.raises(UserError, match="--init pretrained needs --checkpoint"):
        resolve_config(FinetuneConfig, {"data": "x"}, {})


def write_metrics(folder: Path, init: str, seed: int, value: float, checkpoint: str = "runs/pre_a", mode: str = "linear", **extra):
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({
        "dataset": "voc", "mode": mode, "budget": "all", "metric": "mAP", "init": init, "seed": seed,
        "value": value, "checkpoint": checkpoint, **extra,
    }))


def test_compare_sets_pretrained_runs_only_against_random_runs_of_the_same_protocol_and_encoder(tmp_path):
    short, long = {"epochs": 10, "lr": 0.1}, {"epochs": 100, "lr": 0.1}
    small, big = {"arch": "unet", "bottleneck_channels": 512}, {"arch": "unet", "bottleneck_channels": 4000}
    write_metrics(tmp_path / "p_short", "pretrained", 0, 0.7, protocol=short, arch=small, run_prefix="short")
    write_metrics(tmp_path / "r_short", "random", 0, 0.5, protocol=short, arch=small, run_prefix="short")
    write_metrics(tmp_path / "r_long", "random", 0, 0.9, protocol=long, arch=small, run_prefix="long")
    write_metrics(tmp_path / "r_big", "random", 0, 0.1, protocol=short, arch=big, run_prefix="short_big")
    rows = collect(find_runs([str(tmp_path)]))
    paired = [r for r in rows if r.stats("pretrained")[2]]
    assert len(paired) == 1 and paired[0].protocol == "short"
    assert paired[0].difference() == pytest.approx((0.2, 0.0, 1))  # neither the long schedule nor the big latent
    assert sorted(r.protocol for r in rows) == ["long", "short", "short_big"]


def test_compare_statistics_pair_by_seed_and_split_by_pretrain_run(tmp_path):
    for seed, (pre, rand) in enumerate([(0.5, 0.4), (0.7, 0.5), (0.6, 0.6)]):
        write_metrics(tmp_path / f"a_pre_{seed}", "pretrained", seed, pre)
        write_metrics(tmp_path / f"rand_{seed}", "random", seed, rand)
    write_metrics(tmp_path / "b_pre_0", "pretrained", 0, 0.9, checkpoint="runs/pre_b/encoder.pt")
    rows = collect(find_runs([str(tmp_path)]))
    assert [r.pretrain for r in rows] == ["pre_a", "pre_b"]
    a = rows[0]
    assert a.stats("pretrained") == pytest.approx((0.6, 0.1, 3))
    assert a.stats("random") == pytest.approx((0.5, 0.1, 3))
    diffs = [0.1, 0.2, 0.0]
    assert a.difference() == pytest.approx((np.mean(diffs), np.std(diffs, ddof=1), 3))
    assert rows[1].difference() == pytest.approx((0.5, 0.0, 1))  # only seed 0 pairs
    with pytest.raises(UserError, match="no finished runs"):
        find_runs([str(tmp_path / "nothing*")])


@pytest.mark.slow
@pytest.mark.parametrize("mode, extra", [("finetune", []), ("linear", []), ("finetune", ["--l2sp", "1.0"])])
def test_interrupted_finetune_resumes_to_the_same_result(tiny_data, tmp_path, monkeypatch, mode, extra):
    """With --l2sp too: the resumed run is pulled towards the weights it started from, not those it resumed at."""
    import ssl_inpaint.transfer_scoring as engine

    args = ["finetune", "--dataset", "voc", "--data", str(tiny_data / "VOCdevkit"), "--image-size", "64", "--init", "random",
            "--bottleneck-channels", "32", "--epochs", "3", "--batch-size", "8", "--num-workers", "0", "--mode", mode,
            "--lr-schedule", "cosine", *extra]
    run_ssl(*args, "--output-dir", str(tmp_path / "straight"))

    real_score, calls = engine.score_predictions, []

    def crash_in_second_epoch(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated crash")
        return real_score(*a, **k)

    monkeypatch.setattr(engine, "score_predictions", crash_in_second_epoch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_ssl(*args, "--output-dir", str(tmp_path / "broken"))
    run = tmp_path / f"broken/voc_{mode}_all_random_s0"
    saved = torch.load(run / "checkpoints/last.pt", weights_only=True)
    assert saved["epoch"] == 1 and (saved["l2sp_anchors"] is not None) == bool(extra)
    monkeypatch.setattr(engine, "score_predictions", real_score)
    with pytest.raises(UserError, match="interrupted run and --no-resume"):
        run_ssl(*args, "--output-dir", str(tmp_path / "broken"), "--no-resume")
    config_before = (run / "config.yaml").read_text()
    with pytest.raises(UserError, match="--weight-decay 0.0005 -> 0.01"):  # refused before anything in the folder is rewritten
        run_ssl(*args, "--output-dir", str(tmp_path / "broken"), "--weight-decay", "0.01")
    assert (run / "config.yaml").read_text() == config_before
    assert len(yaml.safe_load((run / "environment.yaml").read_text())) == 1
    run_ssl(*args, "--output-dir", str(tmp_path / "broken"))
    straight = json.loads((tmp_path / f"straight/voc_{mode}_all_random_s0/metrics.json").read_text())
    resumed = json.loads((run / "metrics.json").read_text())
    assert resumed["history"] == straight["history"] and resumed["value"] == straight["value"]
    assert not (run / "checkpoints/last.pt").exists()


@pytest.mark.slow
def test_rerunning_finished_seeds_keeps_them(tiny_data, tmp_path):
    args = ["finetune", "--dataset", "voc", "--data", str(tiny_data / "VOCdevkit"), "--image-size", "64", "--init", "random",
            "--bottleneck-channels", "32", "--epochs", "1", "--batch-size", "8", "--num-workers", "0", "--mode", "svm",
            "--output-dir", str(tmp_path)]
    run_ssl(*args, "--seeds", "0")
    first = (tmp_path / "voc_svm_all_random_s0/metrics.json").read_text()
    run_ssl(*args, "--seeds", "0,1")
    assert (tmp_path / "voc_svm_all_random_s0/metrics.json").read_text() == first
    assert (tmp_path / "voc_svm_all_random_s1/metrics.json").is_file()
    with pytest.raises(UserError, match="finished run and --no-resume"):
        run_ssl(*args, "--seeds", "0", "--no-resume")


def test_a_transfer_result_round_trips_through_its_json_in_finetunes_key_order():
    from ssl_inpaint.transfer_result import KEY_ORDER, TransferResult

    result = TransferResult("voc", "svm", "pretrained", "all", 2, "mAP", 0.5, checkpoint="runs/pre", protocol={"lr": 0.1},
                            arch={"arch": "unet"}, per_class={"cat": 0.5}, svm_costs={"cat": 1.0}, history=[{"epoch": 1}],
                            val_value=0.4, n_val=20)
    data = result.to_json()
    assert list(data) == list(KEY_ORDER)
    assert TransferResult.from_json({**data, "a_key_from_a_later_version": 1}) == result
    top1 = TransferResult("folder", "linear", "random", "all", 0, "top1", 0.25)
    assert not {"per_class", "svm_costs", "protocol", "val_value", "n_val"} & set(top1.to_json())
    with pytest.raises(KeyError, match="value"):
        TransferResult.from_json({k: v for k, v in data.items() if k != "value"})
    with pytest.raises(ValueError, match="nan"):
        TransferResult.from_json({**data, "value": float("nan")})
    with pytest.raises(ValueError, match="not a JSON object"):
        TransferResult.from_json([data])
    with pytest.raises(ValueError, match="val_value is inf"):
        TransferResult.from_json({**data, "val_value": float("inf")})


# --- --mixup / --cutmix (timm's Mixup) ---------------------------------------------------------------

def test_mixup_is_off_by_default_and_built_from_timm_for_single_label_data():
    from timm.data import Mixup

    from ssl_inpaint.data.classification import LabelledImages
    from ssl_inpaint.data.sources import FileListSource
    from ssl_inpaint.engine.finetune import make_mixup

    single = LabelledImages(FileListSource([Path(f"{i}.png") for i in range(8)], "x"), np.arange(8) % 4, tuple("abcd"), False)
    flags = {"dataset": "folder", "init": "random"}
    assert make_mixup(resolve_config(FinetuneConfig, flags, {}), single) is None
    mix = make_mixup(resolve_config(FinetuneConfig, flags, {"mixup": 0.8, "cutmix": 1.0}), single)
    assert isinstance(mix, Mixup) and mix.num_classes == 4 and mix.label_smoothing == 0
    multi = LabelledImages(single.source, np.eye(4, dtype=np.int64)[np.arange(8) % 4], tuple("abcd"), True, np.zeros((8, 4), bool))
    with pytest.raises(UserError, match="single-label"):
        make_mixup(resolve_config(FinetuneConfig, flags, {"mixup": 0.8}), multi)


@pytest.mark.parametrize("flags", [{"mode": "linear", "mixup": 0.8}, {"dataset": "voc", "cutmix": 1.0}])
def test_mixup_outside_single_label_fine_tuning_is_refused(flags):
    with pytest.raises(UserError, match="--mixup and --cutmix"):
        resolve_config(FinetuneConfig, {"init": "random", "dataset": "folder", **flags}, {})


def test_a_mixed_batch_trains_on_its_mixed_labels():
    from timm.data import Mixup

    from ssl_inpaint.engine.finetune import classification_loss

    np.random.seed(0)
    images, labels = torch.randn(6, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    mixed, soft = Mixup(mixup_alpha=0.8, label_smoothing=0.0, num_classes=3)(images.clone(), labels)
    lam = soft[0, 0].item()  # image 0 (class 0) is mixed with image 5 (class 2)
    assert 0 < lam < 1 and torch.allclose(mixed[0], lam * images[0] + (1 - lam) * images[5], atol=1e-6)
    assert torch.allclose(soft.sum(1), torch.ones(6)) and soft[0, 2].item() == pytest.approx(1 - lam)
    logits = torch.randn(6, 3)
    expected = -(soft * torch.log_softmax(logits, 1)).sum(1).mean()
    assert classification_loss(logits, soft, torch.zeros(6, 0, dtype=torch.bool), False).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.slow
def test_fine_tuning_with_mixup_and_cutmix_runs_and_records_them(tmp_path):
    write_tiny_fashion_mnist(tmp_path)
    run_ssl("finetune", "--dataset", "fashion_mnist", "--data", str(tmp_path), "--image-size", "32", "--init", "random", "--bottleneck-channels", "32",
            "--labels-per-class", "3", "--epochs", "2", "--batch-size", "9", "--num-workers", "0", "--mixup", "0.8", "--cutmix", "1.0",
            "--output-dir", str(tmp_path / "runs"), "--name", "mix")
    metrics = json.loads((tmp_path / "runs/mix_random_s0/metrics.json").read_text())
    assert (metrics["protocol"]["mixup"], metrics["protocol"]["cutmix"]) == (0.8, 1.0) and metrics["n_train"] == 30


# --- --l2sp (L2-SP) ------------------------------------------------------------------------------------

def test_the_starting_point_penalty_pulls_weights_back_to_where_they_started():
    from ssl_inpaint.losses import StartingPointPenalty

    layer = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    penalty = StartingPointPenalty(layer.parameters(), alpha=0.5)
    assert penalty().item() == 0 and len(penalty.parameters) == 1  # the kernel; BatchNorm and bias are free
    start = layer[0].weight.detach().clone()
    with torch.no_grad():
        layer[0].weight.add_(0.1)
        layer[1].weight.add_(5.0)
    value = penalty()
    assert value.item() == pytest.approx(0.5 * 0.5 * 0.01 * start.numel(), rel=1e-5)
    value.backward()
    assert torch.allclose(layer[0].weight.grad, 0.5 * (layer[0].weight - start).detach())


def test_l2sp_is_built_for_fine_tuning_the_encoder_and_refused_elsewhere():
    from ssl_inpaint.engine.finetune import build_classifier, transfer_training

    flags = {"dataset": "folder", "init": "random", "bottleneck_channels": 8, "image_size": 32, "features": "pooled"}
    config = resolve_config(FinetuneConfig, flags, {"l2sp": 0.1})
    model = build_classifier(config, 4, 3)
    job = transfer_training(config, model, None, None, None, None)
    assert job.penalty.alpha == 0.1 and len(job.penalty.parameters) == sum(p.ndim > 1 for p in model.encoder.parameters())
    assert all(a is not p and torch.equal(a, p) for a, p in zip(job.penalty.anchors, job.penalty.parameters))
    assert transfer_training(resolve_config(FinetuneConfig, flags, {}), model, None, None, None, None).penalty is None
    with pytest.raises(UserError, match="--l2sp pulls fine-tuned encoder weights"):
        resolve_config(FinetuneConfig, {**flags, "mode": "linear"}, {"l2sp": 0.1})


# --- --val-per-class and ssl compare --choose-by-val ------------------------------------------------


def test_validation_images_are_held_out_of_the_labelled_ones_per_class_and_deterministic():
    from ssl_inpaint.data.classification import LabelledImages, validation_subset
    from ssl_inpaint.data.sources import FileListSource

    targets = np.repeat(np.arange(4), 12)
    labelled = LabelledImages(FileListSource([Path(f"{i}.png") for i in range(48)], "x"), targets, tuple("abcd"), False)
    chosen = label_budget(labelled, data_seed=1, per_class=5)
    val = validation_subset(labelled, chosen, data_seed=1, per_class=7)
    assert not set(val) & set(chosen) and np.bincount(targets[val]).tolist() == [7, 7, 7, 7]
    assert np.array_equal(val, validation_subset(labelled, chosen, data_seed=1, per_class=7))
    with pytest.raises(UserError, match=r"--val-per-class 8: class 'a' of x has only 7 training images besides the 20 labelled"):
        validation_subset(labelled, chosen, data_seed=1, per_class=8)
    with pytest.raises(UserError, match="--val-per-class 1: class 'a' of x has only 0"):  # every image labelled: none left
        validation_subset(labelled, np.arange(48), data_seed=1, per_class=1)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["finetune", "linear", "svm"])
def test_a_validation_score_leaves_the_test_result_as_it_was(tmp_path, mode):
    write_tiny_fashion_mnist(tmp_path)
    args = ["finetune", "--dataset", "fashion_mnist", "--data", str(tmp_path), "--image-size", "32", "--init", "random",
            "--bottleneck-channels", "32", "--labels-per-class", "3", "--epochs", "2", "--batch-size", "10", "--num-workers", "0",
            "--mode", mode, "--svm-costs", "1", "--output-dir", str(tmp_path / "runs")]
    run_ssl(*args, "--name", "plain")
    run_ssl(*args, "--name", "held", "--val-per-class", "2")
    plain = json.loads((tmp_path / "runs/plain_random_s0/metrics.json").read_text())
    held = json.loads((tmp_path / "runs/held_random_s0/metrics.json").read_text())
    assert held["value"] == plain["value"] and held["n_val"] == 20 and "val_value" not in plain
    assert 0 <= held["val_value"] <= 1
    if mode != "svm":
        assert [h["top1"] for h in held["history"]] == [h["top1"] for h in plain["history"]]
        assert held["history"][-1]["val_top1"] == held["val_value"]
    with pytest.raises(UserError, match="--val-per-class 4: class 'T-shirt/top' of Fashion-MNIST train has only 3 training images besides the 30 labelled"):
        run_ssl(*args, "--name", "too_many", "--val-per-class", "4")  # 6 training images per class, 3 labelled


def test_compare_chooses_each_inits_protocol_by_validation_and_pairs_the_chosen_runs(tmp_path):
    from ssl_inpaint.engine.compare import choice_table, choose_by_validation

    arch = {"arch": "unet"}
    # protocol a: the pretext validates best; protocol b: the random init validates best but tests worse
    table = {("a", "pretrained"): [(0.60, 0.50), (0.62, 0.52)], ("a", "random"): [(0.40, 0.45), (0.42, 0.47)],
             ("b", "pretrained"): [(0.50, 0.70), (0.52, 0.72)], ("b", "random"): [(0.45, 0.30), (0.47, 0.32)]}
    for (prefix, init), seeds in table.items():
        for seed, (val, test) in enumerate(seeds):
            write_metrics(tmp_path / f"{prefix}_{init}_s{seed}", init, seed, test, mode="finetune", protocol={"lr": prefix}, arch=arch,
                          run_prefix=prefix, val_value=val)
    (choice,) = choose_by_validation(collect(find_runs([str(tmp_path)])))
    assert (choice.chosen["pretrained"].protocol, choice.chosen["random"].protocol) == ("a", "b")
    assert choice.difference("random") == pytest.approx((0.50 - 0.30, 0.0, 2))  # a's pretrained test - b's random test, by seed
    assert "| a (61.00) | 51.00 ± 1.41 | b (46.00) | 31.00 ± 1.41 | 20.00 ± 0.00 |" in choice_table([choice])
    run_ssl("compare", str(tmp_path), "--output", str(tmp_path / "c.md"), "--logdir", str(tmp_path / "tb"), "--choose-by-val")
    written = (tmp_path / "c.md").read_text()
    assert "| b | pre_a | 51.00 ± 1.41 | 46.00 ± 1.41 |" in written and "| b (46.00) | 31.00 ± 1.41 |" in written


def test_choosing_by_validation_without_validation_scores_is_a_clear_error(tmp_path):
    write_metrics(tmp_path / "p", "pretrained", 0, 0.5)
    write_metrics(tmp_path / "r", "random", 0, 0.4)
    with pytest.raises(UserError, match="no run has a validation score; run ssl finetune with --val-per-class"):
        run_ssl("compare", str(tmp_path), "--output", str(tmp_path / "c.md"), "--logdir", str(tmp_path / "tb"), "--choose-by-val")
