"""What every benchmark returns: a figure beside a baseline measured in the same run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    """One line of the `make bench` table. `higher_is_better` decides how the ratio reads."""

    name: str
    value: float
    unit: str
    baseline_name: str
    baseline_value: float
    goal: float | None = None  # minimum acceptable ratio, where the issue sets one
    higher_is_better: bool = True
    note: str = ""

    @property
    def ratio(self) -> float:
        if self.baseline_value == 0:
            return float("nan")
        return self.value / self.baseline_value if self.higher_is_better else self.baseline_value / self.value
