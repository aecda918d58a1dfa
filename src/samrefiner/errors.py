"""Errors that carry one clear, user-facing line (the CLI prints `str(error)` and nothing else)."""


class SamRefinerError(Exception):
    """Base class: the message names the file or value at fault and what is wrong with it."""


class InputError(SamRefinerError):
    """An image, mask, label map or annotation file that cannot be used."""


class CheckpointError(SamRefinerError):
    """A model file or folder that is not a usable checkpoint, or one that cannot be fetched."""


class DeviceError(SamRefinerError):
    """A device name that is not one, or a device this machine does not have (e.g. cuda without CUDA)."""
