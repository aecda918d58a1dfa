"""Official HQ-SAM state dicts (sam_hq_vit_{b,l,h}.pth) -> transformers `SamHQModel` keys and config.

An HQ-SAM checkpoint is a SAM checkpoint plus 25 mask-decoder tensors (the HQ token, its MLP and the
three fusion convolutions); the SAM part goes through `convert_sam`, the HQ part is renamed here.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from transformers import SamHQConfig

from samrefiner.models.convert_sam import OFFICIAL_DECODER_LAYER_NORM_EPS, convert_state_dict

# The HQ output token: present in every HQ-SAM checkpoint, absent from SAM.
HQ_SIGNATURE = "mask_decoder.hf_token.weight"

# Official prefix -> transformers prefix for the HQ-only decoder tensors.
_HQ_RENAMES: tuple[tuple[str, str], ...] = (
    ("mask_decoder.hf_token.", "mask_decoder.hq_token."),
    ("mask_decoder.hf_mlp.layers.0.", "mask_decoder.hq_mask_mlp.proj_in."),
    ("mask_decoder.hf_mlp.layers.1.", "mask_decoder.hq_mask_mlp.layers.0."),
    ("mask_decoder.hf_mlp.layers.2.", "mask_decoder.hq_mask_mlp.proj_out."),
    ("mask_decoder.compress_vit_feat.0.", "mask_decoder.compress_vit_conv1."),
    ("mask_decoder.compress_vit_feat.1.", "mask_decoder.compress_vit_norm."),
    ("mask_decoder.compress_vit_feat.3.", "mask_decoder.compress_vit_conv2."),
    ("mask_decoder.embedding_encoder.0.", "mask_decoder.encoder_conv1."),
    ("mask_decoder.embedding_encoder.1.", "mask_decoder.encoder_norm."),
    ("mask_decoder.embedding_encoder.3.", "mask_decoder.encoder_conv2."),
    ("mask_decoder.embedding_maskfeature.0.", "mask_decoder.mask_conv1."),
    ("mask_decoder.embedding_maskfeature.1.", "mask_decoder.mask_norm."),
    ("mask_decoder.embedding_maskfeature.3.", "mask_decoder.mask_conv2."),
)


def is_hq_state_dict(state_dict: Mapping[str, object]) -> bool:
    """True when the keys look like an official HQ-SAM checkpoint."""
    return HQ_SIGNATURE in state_dict


def rename_hq_key(key: str) -> str | None:
    """The transformers name of one HQ-only official key (None for keys SAM already has)."""
    for official, converted in _HQ_RENAMES:
        if key.startswith(official):
            return converted + key[len(official) :]
    return None


def convert_hq_state_dict(
    state_dict: Mapping[str, torch.Tensor], source: str
) -> tuple[dict[str, torch.Tensor], SamHQConfig]:
    """Official HQ-SAM state dict -> (transformers state dict in float32, matching `SamHQConfig`).

    Raises CheckpointError naming `source` when a key belongs neither to SAM nor to HQ-SAM.
    """
    hq_keys = {key: new_key for key in state_dict if (new_key := rename_hq_key(key)) is not None}
    sam_part = {key: tensor for key, tensor in state_dict.items() if key not in hq_keys}
    converted, sam_config = convert_state_dict(sam_part, source)
    converted.update({new_key: state_dict[key].float() for key, new_key in hq_keys.items()})
    vision = sam_config.vision_config
    config = SamHQConfig(
        vision_config=vision.to_dict(),
        # the fused early ViT features have the encoder's width
        mask_decoder_config={"vit_dim": vision.hidden_size, "layer_norm_eps": OFFICIAL_DECODER_LAYER_NORM_EPS},
    )
    return converted, config
