#!/usr/bin/env python
"""Write tiny datasets in the exact official layouts, with real image files, for tests and demos.

    python tools/make_tiny_datasets.py --out data/tiny

creates
    coco/annotations/instances_{train2017,val2017}.json   polygons, RLE crowd regions, unannotated images
    coco/{train2017,val2017}/*.jpg
    VOCdevkit/VOC2007/{JPEGImages,Annotations}/            XML with truncated / difficult flags
    VOCdevkit/VOC2007/ImageSets/Main/{train,val,trainval,test}.txt and <class>_<split>.txt (1 / -1 / 0)
    images/                                                a nested folder of mixed formats and modes
    fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz   28x28 grey, 10 classes

The pictures are synthetic (a textured background with coloured shapes), but each object class has its
own colour and shape, so a classifier can learn them and the annotations match the pixels.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Optional
from xml.etree import ElementTree as ET

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as coco_mask

from ssl_inpaint.data.classification import VOC_CLASSES

COCO_CATEGORIES = ((1, "person", "person"), (3, "car", "vehicle"), (18, "dog", "animal"), (62, "chair", "furniture"))


def class_colour(index: int) -> tuple[int, int, int]:
    """A distinct saturated colour per class."""
    hue = (index * 0.618034) % 1.0
    r, g, b = (int(255 * (0.5 + 0.5 * math.cos(2 * math.pi * (hue + k / 3)))) for k in range(3))
    return r, g, b


def background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A smooth colour gradient with noise: real texture for the inpainting pretext to complete."""
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    base = rng.uniform(40, 200, size=3)
    slope = rng.uniform(-80, 80, size=(2, 3))
    pixels = base + x[..., None] * slope[0] + y[..., None] * slope[1] + rng.normal(0, 8, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def shape_polygon(kind: int, box: tuple[float, float, float, float]) -> list[tuple[float, float]]:
    """Class-specific outline inside ``box`` (x0, y0, x1, y1): rectangle, ellipse, triangle or diamond."""
    x0, y0, x1, y1 = box
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    if kind % 4 == 0:
        return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    if kind % 4 == 1:
        return [(cx + rx * math.cos(t), cy + ry * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 24, endpoint=False)]
    if kind % 4 == 2:
        return [(cx, y0), (x1, y1), (x0, y1)]
    return [(cx, y0), (x1, cy), (cx, y1), (x0, cy)]


def random_box(rng: np.random.Generator, width: int, height: int, min_frac=0.25, max_frac=0.55):
    w = rng.uniform(min_frac, max_frac) * width
    h = rng.uniform(min_frac, max_frac) * height
    x0, y0 = rng.uniform(0, width - w), rng.uniform(0, height - h)
    return (x0, y0, x0 + w, y0 + h)


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE (column-major run lengths starting with zeros), as in iscrowd=1 entries."""
    flat = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def make_coco(root: Path, rng: np.random.Generator, counts: dict[str, int], size: Optional[tuple[int, int]] = None) -> None:
    """COCO-layout splits; images are ``size`` (width, height) or small random sizes by default."""
    categories = [{"id": i, "name": n, "supercategory": s} for i, n, s in COCO_CATEGORIES]
    image_id, annotation_id = 1, 1
    for split, count in counts.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for n in range(count):
            width, height = size or (int(rng.integers(140, 200)), int(rng.integers(120, 180)))
            picture = background(rng, width, height)
            draw = ImageDraw.Draw(picture)
            file_name = f"{image_id:012d}.jpg"
            # The last two images of each split have no annotations (COCO has ~1% such images).
            num_objects = 0 if n >= count - 2 else int(rng.integers(1, 4))
            for k in range(num_objects):
                cat_index = int(rng.integers(0, len(COCO_CATEGORIES)))
                polygon = shape_polygon(cat_index, random_box(rng, width, height))
                draw.polygon(polygon, fill=class_colour(cat_index))
                flat = [round(c, 2) for p in polygon for c in p]
                # Rasterise the way the COCO API does, so area and RLE agree with annToMask.
                mask = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects([flat], height, width)))
                ys, xs = np.nonzero(mask)
                crowd = k == 2  # a third object is a crowd region stored as RLE
                annotations.append({
                    "id": annotation_id,
                    "image_id": image_id,
                    "category_id": COCO_CATEGORIES[cat_index][0],
                    "segmentation": uncompressed_rle(mask) if crowd else [flat],
                    "area": float(mask.sum()),
                    "bbox": [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)],
                    "iscrowd": int(crowd),
                })
                annotation_id += 1
            picture.save(root / split / file_name, quality=92)
            images.append({"id": image_id, "file_name": file_name, "width": width, "height": height, "license": 1})
            image_id += 1
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        document = {
            "info": {"description": "ssl_inpaint tiny COCO-layout dataset", "version": "1.0", "year": 2017},
            "licenses": [{"id": 1, "name": "CC0", "url": ""}],
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(document))


def voc_xml(file_id: str, width: int, height: int, objects: list[dict], year: str) -> ET.ElementTree:
    node = ET.Element("annotation")
    ET.SubElement(node, "folder").text = f"VOC{year}"
    ET.SubElement(node, "filename").text = f"{file_id}.jpg"
    size = ET.SubElement(node, "size")
    for key, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, key).text = str(value)
    ET.SubElement(node, "segmented").text = "0"
    for obj in objects:
        o = ET.SubElement(node, "object")
        ET.SubElement(o, "name").text = obj["name"]
        ET.SubElement(o, "pose").text = "Unspecified"
        ET.SubElement(o, "truncated").text = str(obj["truncated"])
        ET.SubElement(o, "difficult").text = str(obj["difficult"])
        box = ET.SubElement(o, "bndbox")
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), obj["box"]):
            ET.SubElement(box, key).text = str(value)
    return ET.ElementTree(node)


def make_voc(root: Path, rng: np.random.Generator, counts: dict[str, int], year: str, num_classes: int) -> None:
    base = root / f"VOC{year}"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    classes = VOC_CLASSES[:num_classes]
    splits: dict[str, list[str]] = {}
    presence: dict[str, dict[str, int]] = {}  # id -> class -> 1 present, 0 difficult only
    number = 1
    for split, count in counts.items():
        splits[split] = []
        for n in range(count):
            # VOC2007 ids are plain numbers, later years prefix the year.
            file_id = f"{number:06d}" if year == "2007" else f"{year}_{number:06d}"
            number += 1
            width, height = int(rng.integers(140, 200)), int(rng.integers(120, 180))
            picture = background(rng, width, height)
            draw = ImageDraw.Draw(picture)
            objects = []
            first = n % len(classes)  # every class appears in every split
            picked = [first] + [int(c) for c in rng.integers(0, len(classes), size=int(rng.integers(0, 2)))]
            for k, cls in enumerate(picked):
                # Small objects are marked difficult, as VOC annotators do for hard-to-see instances.
                difficult = int(k > 0 and rng.random() < 0.3)
                scale = (0.12, 0.2) if difficult else (0.3, 0.5)
                x0, y0, x1, y1 = random_box(rng, width, height, *scale)
                truncated = int(rng.random() < 0.3)
                if truncated:  # push the shape over the border; the box is clipped as in VOC
                    x0, x1 = x0 + (width - x1), float(width + 10)
                draw.polygon(shape_polygon(cls, (x0, y0, x1, y1)), fill=class_colour(cls))
                box = (max(1, int(x0) + 1), max(1, int(y0) + 1), min(width, int(x1) + 1), min(height, int(y1) + 1))
                objects.append({"name": classes[cls], "truncated": truncated, "difficult": difficult, "box": box})
            picture.save(base / "JPEGImages" / f"{file_id}.jpg", quality=92)
            ET.indent(tree := voc_xml(file_id, width, height, objects, year))
            tree.write(base / "Annotations" / f"{file_id}.xml")
            presence[file_id] = {}
            for obj in objects:
                flag = 0 if obj["difficult"] else 1
                presence[file_id][obj["name"]] = max(presence[file_id].get(obj["name"], 0), flag)
            splits[split].append(file_id)
    if "train" in splits and "val" in splits:
        splits["trainval"] = splits["train"] + splits["val"]
    main = base / "ImageSets" / "Main"
    for split, ids in splits.items():
        (main / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        for name in classes:
            lines = []
            for i in ids:
                value = presence[i].get(name)
                lines.append(f"{i} {' 0' if value == 0 else ' 1' if value == 1 else '-1'}\n")
            (main / f"{name}_{split}.txt").write_text("".join(lines))


def make_image_folder(root: Path, rng: np.random.Generator, count: int) -> None:
    """A nested folder mixing formats and modes a user's photo folder may hold."""
    variants = [
        ("a/photo_{n}.jpg", "RGB", {}),
        ("a/gray_{n}.jpg", "L", {}),
        ("b/alpha_{n}.png", "RGBA", {}),
        ("b/palette_{n}.png", "P", {}),
        ("b/c/cmyk_{n}.jpg", "CMYK", {}),
        ("c/bitmap_{n}.bmp", "RGB", {}),
        ("c/web_{n}.webp", "RGB", {"quality": 90}),
    ]
    for n in range(count):
        pattern, mode, kwargs = variants[n % len(variants)]
        path = root / pattern.format(n=n)
        path.parent.mkdir(parents=True, exist_ok=True)
        picture = background(rng, int(rng.integers(90, 150)), int(rng.integers(90, 150)))
        ImageDraw.Draw(picture).ellipse(random_box(rng, *picture.size), fill=class_colour(n))
        if mode == "RGBA":
            picture = picture.convert("RGBA")
            picture.putalpha(Image.fromarray(np.full(picture.size[::-1], 200, np.uint8)))
        elif mode == "P":
            picture = picture.convert("P", palette=Image.Palette.ADAPTIVE)
        else:
            picture = picture.convert(mode)
        picture.save(path, **kwargs)
    (root / "notes.txt").write_text("not an image: loaders must ignore this file\n")


def write_idx(path: Path, array: np.ndarray) -> None:
    """The idx format: magic (0, 0, dtype 0x08, ndim), big-endian dims, then the bytes, gzipped."""
    import gzip

    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def make_fashion_mnist(root: Path, rng: np.random.Generator, counts: dict[str, int]) -> None:
    """Fashion-MNIST's four idx files. Class k is a bright bar at a class-specific place and angle on
    a noisy black background, so a probe or classifier can tell the classes apart."""
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in counts.items():
        labels = np.arange(n) % 10
        images = np.zeros((n, 28, 28), np.uint8)
        for i, k in enumerate(labels):
            canvas = Image.fromarray(rng.integers(0, 40, (28, 28)).astype(np.uint8))
            angle = k * math.pi / 10
            cx, cy = 14 + 6 * math.cos(2 * angle), 14 + 6 * math.sin(2 * angle)
            dx, dy = 9 * math.cos(angle), 9 * math.sin(angle)
            ImageDraw.Draw(canvas).line((cx - dx, cy - dy, cx + dx, cy + dy), fill=int(rng.integers(180, 256)), width=4)
            images[i] = np.asarray(canvas)
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write the datasets into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--coco-train", type=int, default=24, help="COCO train2017 images")
    parser.add_argument("--coco-val", type=int, default=6, help="COCO val2017 images")
    parser.add_argument("--voc-train", type=int, default=40)
    parser.add_argument("--voc-val", type=int, default=20)
    parser.add_argument("--voc-test", type=int, default=40)
    parser.add_argument("--voc-year", default="2007")
    parser.add_argument("--voc-classes", type=int, default=20, help="use the first N VOC classes")
    parser.add_argument("--folder-images", type=int, default=14)
    parser.add_argument("--fashion-train", type=int, default=200, help="Fashion-MNIST-layout training images")
    parser.add_argument("--fashion-test", type=int, default=100)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    make_coco(args.out / "coco", rng, {"train2017": args.coco_train, "val2017": args.coco_val})
    make_voc(
        args.out / "VOCdevkit", rng,
        {"train": args.voc_train, "val": args.voc_val, "test": args.voc_test}, args.voc_year, args.voc_classes,
    )
    make_image_folder(args.out / "images", rng, args.folder_images)
    # Its own generator, so the datasets above stay what they were.
    make_fashion_mnist(args.out / "fashion-mnist", np.random.default_rng(args.seed + 1), {"train": args.fashion_train, "t10k": args.fashion_test})
    print(f"wrote tiny COCO, VOCdevkit, image-folder and Fashion-MNIST datasets under {args.out}")


if __name__ == "__main__":
    main()
