"""The decisions file the review page exports, and what it means for each object."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from samrefiner.errors import InputError

FORMAT = "samrefiner-review-decisions"
ACCEPT, REJECT = "accept", "reject"


@dataclass(frozen=True)
class Decisions:
    """Accept/reject per (image id, object key); objects without a decision follow the default.

    `report` is the id of the review report they were exported from (None when the file has none).
    """

    choices: dict[tuple[str, str], str]
    undecided_refined: bool = True
    report: str | None = None

    def use_refined(self, image_id: str, key: str) -> bool:
        """Whether the final dataset takes the refined mask of this object (else the coarse one)."""
        choice = self.choices.get((image_id, key))
        return self.undecided_refined if choice is None else choice == ACCEPT


def read_decisions(path: str | Path, undecided_refined: bool = True) -> Decisions:
    """Parse an exported decisions file; InputError (one line, naming the file) when it is not one."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: not a JSON decisions file ({error})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise InputError(f"{path}: not a decisions file exported by the review page (format {FORMAT!r})")
    entries = document.get("decisions")
    if not isinstance(entries, list):
        raise InputError(f"{path}: 'decisions' must be a list")
    report = document.get("report")
    if report is not None and not isinstance(report, str):
        raise InputError(f"{path}: 'report' must be the report id string the page exported")
    choices: dict[tuple[str, str], str] = {}
    for number, entry in enumerate(entries):
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("image"), str)
            and isinstance(entry.get("object"), str)
            and entry.get("decision") in (ACCEPT, REJECT)
        ):
            raise InputError(
                f"{path}: decision {number} needs string 'image' and 'object' and a 'decision' of "
                f"'{ACCEPT}' or '{REJECT}'"
            )
        choices[(entry["image"], entry["object"])] = entry["decision"]
    return Decisions(choices, undecided_refined, report)


def check_report(decisions: Decisions, path: str | Path, report_id: str) -> None:
    """InputError unless `decisions` were exported from the report whose id is `report_id`."""
    if decisions.report is None:
        raise InputError(f"{path}: names no review report; export the decisions from the page of `samrefiner review`")
    if decisions.report != report_id:
        raise InputError(
            f"{path}: exported from review report {decisions.report}, but these datasets make report {report_id}; "
            "export the decisions from the review of this refined output"
        )
