"""Errors that carry one clear, user-facing line (the CLI prints `str(error)` and nothing else)."""


class SamRefinerError(Exception):
    """Base class: the message names the file or value at fault and what is wrong with it."""


class InputError(SamRefinerError):
    """An image, mask, label map or annotation file that cannot be used."""


class CheckpointError(SamRefinerError):
    """A model file or folder that is not a usable checkpoint, or one that cannot be fetched."""


class InputWarning(UserWarning):
    """An input read by a documented rule that may not be what was meant (e.g. a lossy JPEG mask)."""
