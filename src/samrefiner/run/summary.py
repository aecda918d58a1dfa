"""What one dataset run did: counts, time, failures, why it stopped; printed as one line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Summary:
    """What one run did."""

    images: int = 0  # refined in this run
    objects: int = 0  # refined: coarse mask and output both non-empty
    empty_inputs: int = 0  # empty coarse masks (kept as they were)
    empty_outputs: int = 0  # non-empty coarse masks whose output was empty (the coarse mask kept)
    failures: int = 0
    skipped: int = 0  # already finished by an earlier run (--resume)
    seconds: float = 0.0
    errors_path: Path | None = None
    failed: list[tuple[str, str]] = field(default_factory=list)  # (image key, errors-file line)
    idle: dict[str, float] | None = None  # share of the wall time the model waited, by cause (timing.idle_shares)
    stopped: str | None = None  # why the run stopped early (failure policy), None when it did not
    changed: list[str] = field(default_factory=list)  # finished images redone: their inputs changed (--resume)

    def __str__(self) -> str:
        rate = f"{self.images / self.seconds:.2f} images/s" if self.seconds else "-"
        kept = [
            f"{count} {what} kept{how}"
            for count, what, how in (
                (self.empty_inputs, "empty coarse mask" + "s" * (self.empty_inputs != 1), ""),
                (self.empty_outputs, "empty output" + "s" * (self.empty_outputs != 1), " coarse"),
            )
            if count
        ]
        text = f"{self.images} images, {self.objects} objects refined"
        if kept:
            text += f" ({', '.join(kept)})"
        text += f" in {self.seconds:.1f} s ({rate}); {self.failures} failed"
        if self.failures:
            text += f" (see {self.errors_path})"
        if self.skipped:
            text += f"; {self.skipped} already done"
        if self.changed:
            more = ", ..." if len(self.changed) > 1 else ""
            text += f"; {len(self.changed)} redone, their inputs changed ({self.changed[0]}{more})"
        if self.idle:
            causes = ", ".join(f"{name} {share:.0%}" for name, share in self.idle.items() if name != "total")
            text += f"; model idle {self.idle['total']:.0%} of the time ({causes})"
        return text

    def count_objects(self, result: Any) -> None:
        """Add one image's objects: refined, empty coarse masks, empty outputs."""
        empty_input = [bool(flag) for flag in result.empty_input]
        empty_output = [bool(flag) and not empty for flag, empty in zip(result.empty_output, empty_input)]
        self.empty_inputs += sum(empty_input)
        self.empty_outputs += sum(empty_output)
        self.objects += len(empty_input) - sum(empty_input) - sum(empty_output)

    @property
    def all_objects(self) -> int:
        return self.objects + self.empty_inputs + self.empty_outputs
