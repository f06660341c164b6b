"""Multi-process runs on CPU (gloo), exact resume after SIGKILL, checkpoint-and-exit on SIGTERM.

These start real processes (torchrun, or the CLI), as users do, so they take seconds each.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

TINY_PRETRAIN = [
    "--image-size", "64", "--bottleneck-channels", "64", "--val-images", "4", "--num-workers", "0",
    "--log-every", "1", "--sample-every", "2",
]


def ssl(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    result = subprocess.run([sys.executable, "-m", "ssl_inpaint", *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    result.stderr = " ".join(result.stderr.split())  # rich wraps lines to the terminal width
    return result


def pretrain_args(tiny_data: Path, out: Path, name: str, *extra: str) -> list[str]:
    return ["pretrain", "--dataset", "coco", "--data", str(tiny_data / "coco"), "--output-dir", str(out),
            "--name", name, *TINY_PRETRAIN, *extra]


def state(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)


def assert_weights_close(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key].float(), b[key].float(), atol=atol, rtol=0, msg=key)


def test_two_processes_match_one_process_with_twice_the_batch(tiny_data, tmp_path):
    # No BatchNorm: SyncBatchNorm needs CUDA. A larger Adam epsilon keeps Adam from turning the all-reduce's
    # float rounding of near-zero gradients into full-size steps of opposite sign.
    common = ["--norm", "none", "--max-steps", "3", "--mask", "rect", "--adam-eps", "1e-4"]
    ssl(*pretrain_args(tiny_data, tmp_path, "one", *common, "--batch-size", "4"))
    two = ssl(*pretrain_args(tiny_data, tmp_path, "two", *common, "--batch-size", "2", "--nproc", "2"))
    assert "global batch 4 = 2 per process x 2 processes" in two.stderr
    one_state, two_state = state(tmp_path / "one"), state(tmp_path / "two")
    assert two_state["step"] == one_state["step"] == 3
    for part in ("generator", "global_d", "local_d"):
        assert_weights_close(one_state[part], two_state[part], atol=2e-5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_on_localhost(tiny_data, tmp_path):
    """The README's multi-node command: recipes/launch_torchrun.sh on two 'nodes' meeting at 127.0.0.1."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHON=sys.executable, NNODES="2", NPROC="1", RDZV_ENDPOINT=f"127.0.0.1:{free_port()}", RDZV_ID="ssl-test")
    command = ["bash", "recipes/launch_torchrun.sh", *pretrain_args(tiny_data, tmp_path, "nodes", "--batch-size", "2", "--max-steps", "2")]
    nodes = [subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [" ".join(node.communicate(timeout=600)[0].split()) for node in nodes]
    assert all(node.returncode == 0 for node in nodes), outputs
    assert any("2 per process x 2 processes" in out for out in outputs)
    assert state(tmp_path / "nodes")["step"] == 2


def wait_for_step(run: Path, step: int, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else "exited early"
        path = run / "checkpoints" / "last.pt"
        if path.exists() and torch.load(path, weights_only=True)["step"] >= step:
            return
        time.sleep(0.2)
    raise TimeoutError(f"no checkpoint with step >= {step}")


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_interrupted_run_resumes_to_the_same_weights(tiny_data, tmp_path, how):
    common = ["--batch-size", "2", "--max-steps", "8", "--save-every-steps", "1", "--mask", "rect"]
    ssl(*pretrain_args(tiny_data, tmp_path, "straight", *common))
    args = [sys.executable, "-m", "ssl_inpaint", *pretrain_args(tiny_data, tmp_path, "broken", *common)]
    process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_step(tmp_path / "broken", 3, process)
    process.send_signal(how)
    _, stderr = process.communicate(timeout=120)
    interrupted = state(tmp_path / "broken")["step"]
    if how == signal.SIGTERM:
        assert process.returncode == 0 and "rerun the same command to resume" in " ".join(stderr.split())
    assert 3 <= interrupted < 8
    resumed = ssl(*pretrain_args(tiny_data, tmp_path, "broken", *common))
    assert f"resuming {tmp_path / 'broken'} from step {interrupted}" in resumed.stderr
    a, b = state(tmp_path / "straight"), state(tmp_path / "broken")
    assert b["step"] == 8
    for part in ("generator", "global_d", "local_d"):
        assert_weights_close(a[part], b[part], atol=0)
    assert a["opt_g"]["state"].keys() == b["opt_g"]["state"].keys()
    for key in a["opt_g"]["state"]:
        torch.testing.assert_close(a["opt_g"]["state"][key]["exp_avg"], b["opt_g"]["state"][key]["exp_avg"], atol=0, rtol=0)


def test_distributed_map_equals_single_process(tiny_data, tmp_path):
    ssl("pretrain", "--dataset", "coco", "--data", str(tiny_data / "coco"), "--output-dir", str(tmp_path), "--name", "p",
        *TINY_PRETRAIN, "--batch-size", "4", "--max-steps", "2")
    results = {}
    for nproc in ("1", "2"):
        ssl("finetune", "--dataset", "voc", "--data", str(tiny_data / "VOCdevkit"), "--year", "2007", "--image-size", "64",
            "--init", "pretrained", "--checkpoint", str(tmp_path / "p"), "--mode", "svm", "--batch-size", "7",
            "--num-workers", "0", "--output-dir", str(tmp_path / f"n{nproc}"), "--nproc", nproc)
        results[nproc] = json.loads((tmp_path / f"n{nproc}/voc_svm_all_pretrained_s0/metrics.json").read_text())
    assert results["2"]["world_size"] == 2 and results["2"]["n_test"] == 40
    assert results["2"]["value"] == pytest.approx(results["1"]["value"], abs=1e-9)
    assert results["2"]["per_class"] == pytest.approx(results["1"]["per_class"], abs=1e-9, nan_ok=True)


def test_distributed_finetune_runs(tiny_data, tmp_path):
    ssl("finetune", "--dataset", "voc", "--data", str(tiny_data / "VOCdevkit"), "--year", "2007", "--image-size", "64",
        "--init", "random", "--bottleneck-channels", "32", "--epochs", "1", "--batch-size", "4", "--num-workers", "0",
        "--output-dir", str(tmp_path), "--nproc", "2")
    metrics = json.loads((tmp_path / "voc_finetune_all_random_s0/metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["metric"] == "mAP" and len(metrics["history"]) == 1
    aps = [ap for ap in metrics["per_class"].values() if ap == ap]  # NaN: a class without test positives
    assert aps and metrics["value"] == pytest.approx(sum(aps) / len(aps))  # both processes' predictions scored


def test_a_bad_image_on_one_process_is_that_processes_line_and_the_run_exits_2(tmp_path):
    """Issue 21: the failing process reports its own error with its rank, the other stops with one line
    (no Gloo traceback), and the launcher's own failure report is one line too."""
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(12):
        Image.fromarray(torch.full((40, 40, 3), 20 * i, dtype=torch.uint8).numpy()).save(folder / f"{i:02d}.png")
    (folder / "99.png").write_bytes((folder / "01.png").read_bytes()[:30])
    args = ["pretrain", "--dataset", "folder", "--data", str(folder), "--image-size", "32", "--bottleneck-channels", "8",
            "--widths", "8,8,8,8,8", "--norm", "none", "--batch-size", "2", "--val-images", "2", "--max-steps", "30", "--mask", "rect",
            "--no-global-d", "--no-local-d", "--num-workers", "0", "--strict", "--nproc", "2", "--output-dir", str(tmp_path / "runs")]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    result = subprocess.run([sys.executable, "-m", "ssl_inpaint", *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "ChildFailedError" not in result.stderr, result.stderr[-3000:]
    assert any(line.startswith("error: [rank ") and "unreadable image" in line and "99.png" in line for line in errors), errors
    # The other process says it stopped for that reason, unless the launcher's SIGTERM ended it first.
    assert all("unreadable image" in line or "another process" in line or "failed first" in line for line in errors), errors
    assert "of 2 failed first (exit status 2)" in errors[-1], errors
