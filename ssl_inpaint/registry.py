"""One registry mechanism for everything chosen by name on the command line: generators,
discriminators, encoder kinds, mask families and inpainting baselines (timm's ``register_*`` /
``list_*`` / ``is_*``, as one class). A registry's names are the flag's choices, in its help text and
in the error that a wrong name gets."""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from ssl_inpaint.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind, in registration order. ``flag`` is the option that picks one."""

    def __init__(self, kind: str, flag: str):
        self.kind, self.flag = kind, flag
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@MASKS.register("centre")`` above a class or function adds it under ``name``."""

        def add(entry: T) -> T:
            self.add(name, entry)
            return entry

        return add

    def add(self, name: str, entry: T) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str) -> T:
        """The entry ``name``, or one error line naming the flag and the choices."""
        if name not in self._entries:
            raise UserError(f"unknown {self.kind} {name!r} for {self.flag}; choose one of: {', '.join(self._entries)}")
        return self._entries[name]

    def choices(self) -> str:
        """The names for a help text: ``a, b, c``."""
        return ", ".join(self._entries)
