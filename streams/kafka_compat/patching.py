"""A class attribute replaced by a patch, which can be put back (``install`` decides per
broker flavour, and tests in one process may run apps for different brokers)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Flavour = Literal["noida-db", "kafka"]


@dataclass
class ClassPatch:
    """``owner.attribute`` replaced by ``replacement`` on the brokers that need it."""

    name: str
    owner: type
    attribute: str
    replacement: Callable[..., Any]
    #: The broker flavours it is installed for.
    brokers: frozenset[Flavour]
    #: Why, in one line (docs/kafka.md says more).
    reason: str
    original: Callable[..., Any] = field(init=False)

    def __post_init__(self) -> None:
        self.original = getattr(self.owner, self.attribute)

    @property
    def installed(self) -> bool:
        return getattr(self.owner, self.attribute) is self.replacement

    def install(self) -> None:
        setattr(self.owner, self.attribute, self.replacement)

    def uninstall(self) -> None:
        setattr(self.owner, self.attribute, self.original)
