"""The mission's path end to end on generated tiny COCO / VOC (issue 22): tools/coco_to_voc.sh --smoke
packs, pretrains, fine-tunes / linear-probes / SVM-probes every init and compares; tools/gpu_check.sh
runs its CPU fall-back, so the script a GPU session runs first is itself tested."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run_script(*args: str, env_extra: dict) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(PYTHON=sys.executable, **env_extra)
    return subprocess.run(["bash", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)


def test_coco_to_voc_smoke_runs_every_step_for_every_init(tmp_path):
    result = run_script("tools/coco_to_voc.sh", "--smoke", env_extra={"RUN_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    out = tmp_path / "coco_to_voc"
    assert (out / "pack_32" / "pack.json").is_file() and (out / "pretext" / "encoder.pt").is_file()
    runs = sorted(p.name for p in (out / "voc07").iterdir() if (p / "metrics.json").is_file())
    assert runs == sorted(f"voc07_{protocol}_{init}_s{seed}" for protocol in ("finetune", "linear", "svm")
                          for init in ("pretrained", "random", "datadep") for seed in (0, 1))
    metrics = json.loads((out / "voc07" / "voc07_finetune_pretrained_s0" / "metrics.json").read_text())
    assert metrics["metric"] == "mAP" and metrics["protocol"]["image_size"] == 64  # fine-tuned at another size than the pretext's 32
    table = (out / "voc07" / "compare.md").read_text()
    assert table.count("| voc ") >= 3 and "pretrained − random" in table and "pretrained − datadep" in table
    again = run_script("tools/coco_to_voc.sh", "--smoke", env_extra={"RUN_DIR": str(tmp_path)})  # finished steps are kept
    assert again.returncode == 0 and "pretrain pretext" not in again.stderr, again.stderr[-2000:]


def test_gpu_check_runs_its_cpu_fall_back(tmp_path):
    result = run_script("tools/gpu_check.sh", str(tmp_path / "check"), env_extra={"CUDA_VISIBLE_DEVICES": ""})
    table = (tmp_path / "check" / "table.md").read_text()
    assert result.returncode == 0, table + result.stderr[-2000:]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "| cpu |" in line]
    assert len(rows) >= 9 and all("| ok |" in row for row in rows), table
    assert any("torchrun" in row for row in rows) and any("resnet50 masked" in row for row in rows)
