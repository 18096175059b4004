"""Ages as people type them (7d, 12h, 30m, 2w): one grammar for the audit filters and the CLI."""

from __future__ import annotations

import enum
import re
from datetime import timedelta

UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
UNIT_NAMES = "m (minutes), h (hours), d (days) or w (weeks)"
MAX_AGE = timedelta(days=36525)  # a century: plenty for an audit log, far from overflow

_AGE = re.compile(r"([0-9]+)([a-z]+)?")
_SECONDS = (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60))


class AgeProblem(enum.Enum):
    NOT_AN_AGE = "not an age"
    UNKNOWN_UNIT = "unknown unit"
    ZERO = "zero"
    TOO_FAR = "too far back"


class AgeError(ValueError):
    """`problem` says what is wrong with `text`; each caller words it for its own audience."""

    def __init__(self, problem: AgeProblem, text: str) -> None:
        super().__init__(f"{problem.value}: {text!r}")
        self.problem = problem
        self.text = text


def parse_age(text: str) -> timedelta:
    """`7d` → 7 days. Raises `AgeError` for anything else (no unit, zero, over a century)."""
    match = _AGE.fullmatch(text.strip().lower())
    if not match or not match.group(2):
        raise AgeError(AgeProblem.NOT_AN_AGE, text)
    unit = UNITS.get(match.group(2))
    if unit is None:
        raise AgeError(AgeProblem.UNKNOWN_UNIT, match.group(2))
    digits = match.group(1).lstrip("0")
    if not digits:
        raise AgeError(AgeProblem.ZERO, text)
    if len(digits) > 8 or timedelta(**{unit: int(digits)}) > MAX_AGE:
        raise AgeError(AgeProblem.TOO_FAR, text)
    return timedelta(**{unit: int(digits)})


def format_age(age: timedelta) -> str:
    """The shortest way to type `age` back: 7 days → `1w`, 36 hours → `36h`."""
    seconds = int(age.total_seconds())
    for unit, size in _SECONDS:
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
