"""The registry of backend classes: which class reads which official checkpoint, which transformers model type.

To add a family, write a `PromptableModel` subclass (usually a `TransformersBackend`: override the
hooks that differ) and list it here:
- official checkpoints: add the class to STATE_DICT_BACKENDS; it overrides the class methods
  `matches_state_dict(state_dict)` (True for its key layout) and `from_state_dict(state_dict, source, device)`;
- transformers folders and Hugging Face ids: map the config's `model_type` to the class in
  PRETRAINED_BACKENDS; the class names its transformers class in `model_class` and is built as
  `cls(model, name, device)`.
"""

from __future__ import annotations

from samrefiner.models.base import PromptableModel
from samrefiner.models.edgetam import EdgeTamBackend
from samrefiner.models.lite_medsam import LiteMedSamBackend
from samrefiner.models.mobile_sam import MobileSamBackend
from samrefiner.models.sam import SamBackend
from samrefiner.models.sam2 import Sam2Backend
from samrefiner.models.sam3 import Sam3Backend
from samrefiner.models.sam_hq import SamHQBackend
from samrefiner.models.transformers_backend import TransformersBackend

# Checked in order: HQ-SAM's keys extend SAM's, so HQ-SAM comes first.
STATE_DICT_BACKENDS: tuple[type[PromptableModel], ...] = (
    SamHQBackend,
    SamBackend,
    Sam2Backend,
    MobileSamBackend,
    LiteMedSamBackend,
)

# transformers config `model_type` -> backend class.
PRETRAINED_BACKENDS: dict[str, type[TransformersBackend]] = {
    "sam": SamBackend,
    "sam_hq": SamHQBackend,
    "sam2": Sam2Backend,
    "sam3_tracker": Sam3Backend,
    "sam3_video": Sam3Backend,  # facebook/sam3: its tracker is loaded
    "edgetam": EdgeTamBackend,
}
