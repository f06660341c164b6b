"""How far a pretext moved each conv of its encoder from PyTorch's init, in weight norm (issue 20).

Behind BatchNorm a conv's output does not depend on its weight norm, but SGD's effective step on it
shrinks with the square of that norm; this prints, per conv of each encoder.pt given, the norm the
pretext left, the norm PyTorch's default init gives that shape, and their ratio.

    .venv/bin/python tools/weight_norms.py RUN/photos/cifar10_pretext RUN/photos/imagenette_pretext
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ssl_inpaint.checkpoint import ENCODER_FORMAT, load_checkpoint, resolve_encoder_file  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="pretrain run folders or their encoder.pt")
    args = p.parse_args()
    print("| encoder | conv | shape | pretext norm | init norm | ratio |\n|---|---|---|---|---|---|")
    for run in args.runs:
        payload = load_checkpoint(resolve_encoder_file(run), ENCODER_FORMAT)
        for name, weight in payload["state_dict"].items():
            if weight.dim() != 4:
                continue
            init = (weight.numel() / (3 * weight[0].numel())) ** 0.5  # kaiming-uniform, a = sqrt(5)
            norm = weight.float().norm().item()
            print(f"| {Path(run).name} | {name} | {tuple(weight.shape)} | {norm:.2f} | {init:.2f} | {norm / init:.1f} |")


if __name__ == "__main__":
    main()
