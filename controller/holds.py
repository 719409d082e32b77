"""Officer holds: HAWBs that must not be released, whatever the other evidence says."""

from __future__ import annotations


class Holds:
    """The set of held HAWBs with the reason each was held. In-memory; the journal keeps history."""

    def __init__(self) -> None:
        self._held: dict[str, str] = {}

    def hold(self, hawb: str, reason: str) -> None:
        self._held[hawb] = reason

    def lift(self, hawb: str) -> bool:
        return self._held.pop(hawb, None) is not None

    def __contains__(self, hawb: object) -> bool:
        return hawb in self._held

    def items(self) -> dict[str, str]:
        return dict(self._held)
