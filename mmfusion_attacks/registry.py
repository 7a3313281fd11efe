"""A tiny name -> factory registry (models, datasets), so the CLI and YAML configs can name things
and users can add their own without touching the core."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., T]] = {}

    def register(self, name: str | None = None, *, overwrite: bool = False) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: ``@models.register("my-net")``."""

        def add(factory: Callable[..., T]) -> Callable[..., T]:
            key = name or factory.__name__
            if key in self._items and not overwrite:
                raise ValueError(f"{self.kind} '{key}' is already registered (pass overwrite=True)")
            self._items[key] = factory
            return factory

        return add

    def create(self, name: str, **kwargs: Any) -> T:
        if name not in self._items:
            raise KeyError(f"unknown {self.kind} '{name}'; registered: {self.names()}")
        return self._items[name](**kwargs)

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered as ``name`` (for its signature)."""
        if name not in self._items:
            raise KeyError(f"unknown {self.kind} '{name}'; registered: {self.names()}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
