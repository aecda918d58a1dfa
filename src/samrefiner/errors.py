"""Errors that carry one clear, user-facing line (the CLI prints `str(error)` and nothing else)."""

import sys
import warnings


class SamRefinerError(Exception):
    """Base class: the message names the file or value at fault and what is wrong with it."""


class InputError(SamRefinerError):
    """An image, mask, label map or annotation file that cannot be used."""


class InputWarning(UserWarning):
    """An input read by a documented rule that may not be what was meant (e.g. a lossy JPEG mask)."""


def show_input_warnings() -> None:
    """From now on print every InputWarning as one `samrefiner: warning: <file>: <what>` line on
    stderr (each time it occurs); other warnings as Python shows them."""
    if warnings.showwarning is not _show_warning:
        _show_warning.python = warnings.showwarning  # type: ignore[attr-defined]
        warnings.showwarning = _show_warning
    warnings.simplefilter("always", InputWarning)


def _show_warning(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 (warnings' signature)
    if issubclass(category, InputWarning):
        print(f"samrefiner: warning: {message}", file=sys.stderr)
    else:
        _show_warning.python(message, category, filename, lineno, file, line)  # type: ignore[attr-defined]


class CheckpointError(SamRefinerError):
    """A model file or folder that is not a usable checkpoint, or one that cannot be fetched."""


class DeviceError(SamRefinerError):
    """A device name that is not one, or a device this machine does not have (e.g. cuda without CUDA)."""
