"""One registry of named things of one kind: the methods, samplers, launchers, metrics and evaluators all use it.

A :class:`Registry` is a ``dict`` (so reading it is plain dict access, in registration order) that refuses a name
registered twice and answers an unknown name with one line naming the valid ones.
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(dict, Generic[T]):
    """Things of one ``kind`` (e.g. "method") by name."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, name: str, item: T) -> T:
        """Add ``item`` as ``name`` (a name can be registered once); return it."""
        if name in self:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self[name] = item
        return item

    def unregister(self, name: str) -> None:
        """Remove ``name`` if registered (tests that register their own)."""
        self.pop(name, None)

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self)

    def lookup(self, name: str) -> T:
        """The thing registered as ``name``; a ValueError naming the valid ones otherwise."""
        try:
            return self[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r} (expected one of: {', '.join(self)})") from None
