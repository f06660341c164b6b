#!/usr/bin/env python3
"""Build the real-photo inpainting dataset from the Debian wallpaper packages.

    apt-get install plasma-workspace-wallpapers mate-backgrounds
    python tools/make_photo_dataset.py --out data/photos

Only the photographs are used (the packages also hold abstract art and illustrations, listed below
as excluded). Train and test are split **by source picture**: every tile of a picture lands in the
same split, so the test set measures completion of scenes the model never saw. Each picture is
resized to a few shorter-side lengths (several scales of the same scene) and cut into non-overlapping
square tiles; the folders are plain image folders (``--dataset folder``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

PLASMA = Path("/usr/share/wallpapers")
MATE = Path("/usr/share/backgrounds/mate/nature")

# Photographs, chosen by eye from the two packages; the rest of the packages is abstract art,
# renderings and illustrations (Altai, Autumn, Canopee, Cascade, Cluster, Elarun, Flow, FlyingKonqui,
# Honeywave, IceCold, Kay, Kokkini, MilkyWay, Opal, PastelHills, Patak, SafeLanding, Shell, Volna and
# mate/abstract, mate/desktop).
PLASMA_PHOTOS = (
    "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey", "Kite",
    "OneStandsOut", "Path", "summer_1am",
)
MATE_PHOTOS = (
    "Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird", "RainDrops", "Storm",
    "TwoWings", "Wood", "YellowFlower",
)
# Held-out pictures: a mix of both packages and of scene types (water, texture, flower, architecture, sky).
TEST_PICTURES = ("BytheWater", "Grey", "Kite", "FreshFlower", "Storm")


def largest_version(folder: Path) -> Path:
    """A Plasma wallpaper ships one picture at many resolutions; take the largest file."""
    files = [p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    if not files:
        raise FileNotFoundError(folder)
    return max(files, key=lambda p: p.stat().st_size)


def source_pictures() -> dict[str, Path]:
    pictures = {name: largest_version(PLASMA / name / "contents" / "images") for name in PLASMA_PHOTOS}
    pictures.update({name: MATE / f"{name}.jpg" for name in MATE_PHOTOS})
    return pictures


def tiles(image: Image.Image, tile: int, shorter_sides: tuple[int, ...]) -> list[Image.Image]:
    """Non-overlapping ``tile``-pixel squares of the picture resized to each shorter side."""
    out = []
    for side in shorter_sides:
        scale = side / min(image.size)
        resized = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
        for top in range(0, resized.height - tile + 1, tile):
            for left in range(0, resized.width - tile + 1, tile):
                out.append(resized.crop((left, top, left + tile, top + tile)))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/photos"), help="Writes OUT/train and OUT/test.")
    parser.add_argument("--tile", type=int, default=128, help="Tile side in pixels.")
    parser.add_argument("--scales", default="256,384,512", help="Shorter-side lengths the pictures are resized to.")
    parser.add_argument("--originals", action="store_true", help="Also copy the held-out pictures at full size to OUT/test_full.")
    args = parser.parse_args()
    shorter_sides = tuple(int(s) for s in args.scales.split(","))
    try:
        pictures = source_pictures()
        missing = [str(p) for p in pictures.values() if not p.exists()]
    except FileNotFoundError as exc:
        missing = [str(exc)]
    if missing:
        print(
            f"error: {missing[0]} not found; install the photographs with "
            f"`apt-get install plasma-workspace-wallpapers mate-backgrounds`",
            file=sys.stderr,
        )
        return 2
    counts = {"train": 0, "test": 0}
    for name, path in sorted(pictures.items()):
        split = "test" if name in TEST_PICTURES else "train"
        folder = args.out / split
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.open(path).convert("RGB")
        for index, square in enumerate(tiles(image, args.tile, shorter_sides)):
            square.save(folder / f"{name}_{index:03d}.png")
            counts[split] += 1
        if split == "test" and args.originals:
            (args.out / "test_full").mkdir(parents=True, exist_ok=True)
            image.save(args.out / "test_full" / f"{name}.png")
    n_test = len(TEST_PICTURES)
    print(
        f"{args.out}: train {counts['train']} tiles from {len(pictures) - n_test} pictures, "
        f"test {counts['test']} tiles from {n_test} pictures ({args.tile}px tiles at shorter sides {args.scales})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
