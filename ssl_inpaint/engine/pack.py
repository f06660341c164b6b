"""``ssl pack``: decode a dataset once, resized for training at one size, into a pack that
``--dataset packed`` reads as an in-memory array (see ``data/packed.py``)."""

from __future__ import annotations

from pathlib import Path

from ssl_inpaint.data import create_source
from ssl_inpaint.data.packed import pack_images
from ssl_inpaint.runtime import console
from ssl_inpaint.options.pack import PackConfig


def run_pack(config: PackConfig) -> Path:
    config.validate()
    source = create_source(config.dataset, config.data, config.split, config.year)
    output = Path(config.output)

    def progress(done: int, total: int) -> None:
        if done % config.log_every == 0 or done == total:
            console.print(f"pack: {done}/{total} images read")

    count, skipped = pack_images(source, config.image_size, output, config.reduced_decode, config.strict, progress)
    for where in skipped[:5]:
        console.print(f"skipped unreadable image {where}", style="yellow")
    console.print(f"packed {count} images of {source.name} at {config.image_size} px into {output} ({len(skipped)} unreadable skipped); "
                  f"train with --dataset packed --data {output} --image-size {config.image_size}")
    return output
