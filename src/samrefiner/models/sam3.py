"""SAM 3 backend: transformers' `Sam3TrackerModel` (SAM 3's promptable tracker, image mode).

Pre- and postprocessing are those of the official SAM 3 point/box predictor
(facebookresearch/sam3, `sam3/model/sam1_task_predictor.py` with `SAM2Transforms` of
`sam3/model/utils/sam1_utils.py`): the image as a float tensor in [0, 1], resized to image_size x
image_size (1008) without keeping the aspect ratio, bilinear with antialiasing, normalised with
mean = std = 0.5; holes of up to 256 pixels in each low-res mask are filled before the logits go
to the original size (its default `max_hole_area=256`; `model.max_hole_area = 0` turns that off,
which is what transformers' `Sam3TrackerProcessor` does). The embedding grid is the 1008 / 14 = 72
patch grid, and mask prompts and low-res logits are 4 x 72 = 288 squares (all read from the
model's config). Prompts and decoding are SAM 2.1's.
"""

from __future__ import annotations

from transformers import Sam3TrackerModel

from samrefiner.models.sam2 import WholeFrameBackend

SAM3_MAX_HOLE_AREA = 256.0  # the official SAM 3 predictor's default


class Sam3Backend(WholeFrameBackend):
    """SAM 3's tracker (ViT + FPN encoder, SAM 2 style prompt encoder and mask decoder)."""

    kind = "sam3"
    model_class = Sam3TrackerModel
    pixel_mean = (0.5, 0.5, 0.5)
    pixel_std = (0.5, 0.5, 0.5)
    max_hole_area = SAM3_MAX_HOLE_AREA
