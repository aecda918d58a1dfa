"""Reading JSON input files with one clear error line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from samrefiner.errors import InputError
from samrefiner.io.images import atomic_write


def load_json(path: Path) -> Any:
    """The parsed JSON file; InputError with the position of the first syntax error."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error.msg} at line {error.lineno} column {error.colno})") from None
    except (UnicodeDecodeError, OSError) as error:
        raise InputError(f"{path}: cannot be read as JSON ({error})") from None


def json_or_none(path: Path) -> Any:
    """The parsed JSON file, or None when it cannot be read as JSON (to recognise our own outputs)."""
    try:
        return load_json(path)
    except InputError:
        return None


def write_json_file(path: Path, document: Any) -> None:
    """`document` as indented JSON, written atomically."""
    text = json.dumps(document, indent=2) + "\n"
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))
