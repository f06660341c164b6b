"""The options of ``ssl pack``: the image source to decode once and the packed file to write."""

from __future__ import annotations

from dataclasses import dataclass

from ssl_inpaint.config import at_least, check_choices, MAX_SIDE, option
from ssl_inpaint.data import SourceOptions, packable_kinds
from ssl_inpaint.errors import UserError


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
