"""``ssl pack``: decode a dataset once, resized for training at one size, into a pack that
``--dataset packed`` reads as an in-memory array (see ``data/packed.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ssl_inpaint.config import at_least, check_choices, MAX_SIDE, option
from ssl_inpaint.data import SourceOptions, create_source, packable_kinds
from ssl_inpaint.data.packed import pack_images
from ssl_inpaint.errors import UserError
from ssl_inpaint.runtime import console

@dataclass
class PackConfig(SourceOptions):
    image_size: int = option(128, "The training side: every image's shorter side is resized to it (train with the same --image-size).", at_least(16, MAX_SIDE))
    output: str = option("", "The pack folder to write (a new folder).")
    reduced_decode: bool = option(True, "Decode JPEGs at 1/2, 1/4 or 1/8 size when the image still covers --image-size (as ssl pretrain does by default, so the pixels match); --no-reduced-decode decodes every pixel.")
    log_every: int = option(1000, "A progress line every N images.", at_least(1))

    def validate(self) -> None:
        check_choices(self, {"dataset": packable_kinds()})
        self.resolve_split()
        if not self.output:
            raise UserError("no pack folder given: pass --output DIR")


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
