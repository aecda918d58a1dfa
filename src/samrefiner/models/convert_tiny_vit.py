"""Official MobileSAM / LiteMedSAM state dicts (TinyViT image encoder + SAM prompt encoder and mask
decoder) -> a transformers `SamModel` whose vision encoder is `tiny_vit.TinyViT`.

The encoder's widths, depths, heads, windows and patch embedding are read from the tensor shapes; the
encoder keys keep their official names (`image_encoder.` -> `vision_encoder.`), the prompt encoder
and mask decoder go through `convert_sam`. The BatchNorm `num_batches_tracked` counters (optional:
torch fills them in) and MobileSAM's unused classifier head (`norm_head`, `head`) are dropped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch
from transformers import SamConfig, SamModel

from samrefiner.errors import CheckpointError
from samrefiner.models.convert_sam import (
    _POSITIONAL,
    OFFICIAL_DECODER_LAYER_NORM_EPS,
    load_exactly,
    rename_key,
    rename_tensors,
)
from samrefiner.models.tiny_vit import TinyViT, TinyViTShape

# Keys whose presence marks a state dict as an official TinyViT-SAM (MobileSAM, LiteMedSAM) checkpoint.
TINY_VIT_SIGNATURE = (
    "image_encoder.patch_embed.seq.0.c.weight",
    "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
    "mask_decoder.iou_token.weight",
)
EMBEDDING_SIZE = 64  # side of the prompt encoder's image-embedding grid (both released models)
_PREFIX = "image_encoder."
_UNUSED = re.compile(r"(^image_encoder\.(norm_head|head)\.|\.num_batches_tracked$)")


def is_tiny_vit_state_dict(state_dict: Mapping[str, object]) -> bool:
    """True when the keys look like an official MobileSAM / LiteMedSAM checkpoint."""
    return all(key in state_dict for key in TINY_VIT_SIGNATURE)


def patch_kernel(state_dict: Mapping[str, torch.Tensor]) -> int:
    """3 for MobileSAM's patch embedding (3x3, stride 2), 1 for LiteMedSAM's (1x1, stride 1)."""
    return int(state_dict["image_encoder.patch_embed.seq.0.c.weight"].shape[-1])


def read_tiny_vit_shape(state_dict: Mapping[str, torch.Tensor], source: str) -> TinyViTShape:
    """Widths, depths, heads, windows, ratios and patch embedding of the encoder, from tensor shapes."""
    try:
        return _read_shape(state_dict)
    except (KeyError, IndexError, ValueError, ZeroDivisionError) as error:
        raise CheckpointError(
            f"{source}: not a complete TinyViT (MobileSAM / LiteMedSAM) checkpoint ({error})"
        ) from None


def _read_shape(state_dict: Mapping[str, torch.Tensor]) -> TinyViTShape:
    blocks: dict[int, set[int]] = {}
    for key in state_dict:
        if match := re.match(r"image_encoder\.layers\.(\d+)\.(?:blocks\.(\d+)\.)?", key):
            stage_blocks = blocks.setdefault(int(match.group(1)), set())
            if match.group(2) is not None:
                stage_blocks.add(int(match.group(2)))
    stages = max(blocks) + 1
    if sorted(blocks) != list(range(stages)) or stages < 2:
        raise ValueError(f"encoder stages {sorted(blocks)}")
    dims = [state_dict[_PREFIX + "patch_embed.seq.2.c.weight"].shape[0]]
    dims += [
        state_dict[f"{_PREFIX}layers.{stage - 1}.downsample.conv1.c.weight"].shape[0] for stage in range(1, stages)
    ]
    heads, windows = [0], [0]
    for stage in range(1, stages):
        biases = state_dict[f"{_PREFIX}layers.{stage}.blocks.0.attn.attention_biases"]
        window = math.isqrt(biases.shape[1])
        if window * window != biases.shape[1]:
            raise ValueError(f"stage {stage} attention_biases has {biases.shape[1]} offsets, not a square window")
        heads.append(biases.shape[0])
        windows.append(window)
    kernel = patch_kernel(state_dict)
    if kernel not in (1, 3):
        raise ValueError(f"patch embedding kernel {kernel} (MobileSAM: 3, LiteMedSAM: 1)")
    first_block = f"{_PREFIX}layers.1.blocks.0."
    return TinyViTShape(
        embed_dims=tuple(dims),
        depths=tuple(len(blocks[stage]) for stage in range(stages)),
        num_heads=tuple(heads),
        window_sizes=tuple(windows),
        patch_kernel=kernel,
        mlp_ratio=state_dict[first_block + "mlp.fc1.weight"].shape[0] / dims[1],
        expand_ratio=state_dict[_PREFIX + "layers.0.blocks.0.conv1.c.weight"].shape[0] / dims[0],
        local_conv_size=state_dict[first_block + "local_conv.c.weight"].shape[-1],
        out_chans=state_dict[_PREFIX + "neck.0.weight"].shape[0],
    )


def image_size_of(shape: TinyViTShape) -> int:
    """Side of the square input frame that gives the 64 x 64 embedding (1024 MobileSAM, 256 LiteMedSAM)."""
    return EMBEDDING_SIZE * shape.total_stride


def rename_tiny_vit_key(key: str) -> str | None:
    """The `SamModel` name of one official key (None when it has none, or is one of the dropped ones)."""
    if _UNUSED.search(key):
        return None
    if key.startswith(_PREFIX):
        return "vision_encoder." + key[len(_PREFIX) :]
    return rename_key(key)


def tiny_vit_sam_config(shape: TinyViTShape) -> SamConfig:
    """`SamConfig` of the prompt encoder and mask decoder for this encoder's input frame.

    The decoder's two-way attention blocks get the official LayerNorm eps, 1e-5 (transformers'
    default 1e-6 moves LiteMedSAM's trained single-mask logits by up to 2e-2).
    """
    return SamConfig(
        prompt_encoder_config={"image_size": image_size_of(shape), "patch_size": shape.total_stride},
        mask_decoder_config={"layer_norm_eps": OFFICIAL_DECODER_LAYER_NORM_EPS},
    )


def tiny_vit_sam_model(shape: TinyViTShape, device: str | torch.device = "meta") -> SamModel:
    """A `SamModel` whose vision encoder is a TinyViT of this shape (on `device`: the meta device to
    load a checkpoint into, a real one for random weights)."""
    with torch.device(device):
        model = SamModel(tiny_vit_sam_config(shape))
        model.vision_encoder = TinyViT(shape)
    return model


def build_tiny_vit_sam(state_dict: Mapping[str, torch.Tensor], source: str) -> SamModel:
    """Convert an official MobileSAM / LiteMedSAM state dict and load it (strict: all keys, all shapes)."""
    shape = read_tiny_vit_shape(state_dict, source)
    converted = rename_tensors(
        state_dict, rename_tiny_vit_key, _POSITIONAL, "MobileSAM / LiteMedSAM", source, skip=_UNUSED.search
    )
    return load_exactly(tiny_vit_sam_model(shape), converted, source, f"a TinyViT SAM of shape {shape}")
