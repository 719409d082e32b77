"""Officer holds: HAWBs that must not be released, whatever the other evidence says.

The set lives in memory for the decision path; every change is journalled first by the
controller (an operator command), and the journal gives the set back at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Hold:
    hawb: str
    reason: str
    user: str = ""
    since: float = 0.0
    """When the hold was placed, on the controller's clock."""


class Holds:
    """The held HAWBs, each with who held it, why and since when."""

    def __init__(self) -> None:
        self._held: dict[str, Hold] = {}

    def hold(self, hawb: str, reason: str, user: str = "", since: float = 0.0) -> None:
        self._held[hawb] = Hold(hawb, reason, user, since)

    def lift(self, hawb: str) -> bool:
        return self._held.pop(hawb, None) is not None

    def __contains__(self, hawb: object) -> bool:
        return hawb in self._held

    def __len__(self) -> int:
        return len(self._held)

    def get(self, hawb: str) -> Hold | None:
        return self._held.get(hawb)

    def items(self) -> dict[str, Hold]:
        return dict(self._held)
