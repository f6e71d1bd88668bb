"""What verify reports: one Check per invariant, grouped by the promise it proves."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

#: The promises (SPEC.md, README "Guarantees"), by number.
PROMISES = {
    1: "every push request reaches one terminal outcome",
    2: "no provider called twice for one send_id; one outcome per send",
    3: "every event lands in ClickHouse exactly once",
    4: "ClickHouse agrees with the stream processors' records",
    5: "nobody forges an ack; personal data stays where it lives",
}
#: The promises in a table's first column.
LABELS = {1: "1 terminal outcome", 2: "2 one call, one outcome", 3: "3 in ClickHouse once",
          4: "4 ClickHouse agrees", 5: "5 acks, personal data"}
#: Examples kept per check (the count of violations is always complete).
EXAMPLES = 5


@dataclass
class Check:
    """One invariant checked: how many items it covered, which broke it, which are too recent
    to judge (pending), and why it was not checked at all (skipped)."""

    promise: int
    name: str
    checked: int = 0
    violations: list[str] = field(default_factory=list)
    pending: int = 0
    note: str = ""
    skipped: str = ""

    def fail(self, text: str) -> None:
        """Record one violation."""
        self.violations.append(text)

    @property
    def ok(self) -> bool:
        """No violation (a skipped check is not a violation)."""
        return not self.violations

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: the violation count and the first few examples."""
        out = asdict(self)
        out["violations"] = len(self.violations)
        out["examples"] = self.violations[:EXAMPLES]
        out["promise_text"] = PROMISES[self.promise]
        return out


def skipped(promise: int, name: str, why: str) -> Check:
    """A check that could not run, and why."""
    return Check(promise, name, skipped=why)


def violations(checks: list[Check]) -> int:
    """All violations of these checks."""
    return sum(len(c.violations) for c in checks)


def short(value: str, keep: int = 8) -> str:
    """An id shortened for an example line."""
    return value if len(value) <= keep + 1 else value[:keep] + "…"
