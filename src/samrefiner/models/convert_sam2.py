"""Official SAM 2.1 checkpoints (sam2.1_hiera_{tiny,small,base_plus,large}.pt) -> transformers `Sam2Model`.

Official layout: `torch.load(path)["model"]`, keys as built by facebookresearch/sam2
(`sam2/modeling/sam2_base.py`: image_encoder.trunk / image_encoder.neck / sam_prompt_encoder /
sam_mask_decoder / no_mem_embed, plus the video-only memory modules that image refinement drops).
The variant is read from the shapes (trunk width and blocks per stage); its attention heads, window
sizes and global-attention blocks, which shapes do not show, come from the official configs
(`sam2/configs/sam2.1/sam2.1_hiera_{t,s,b+,l}.yaml`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from transformers import Sam2Config, Sam2Model

from samrefiner.errors import CheckpointError
from samrefiner.models.convert_sam import load_converted, rename_tensors

# Keys whose presence marks a state dict as an official SAM 2 / 2.1 checkpoint.
SAM2_SIGNATURE = (
    "image_encoder.trunk.patch_embed.proj.weight",
    "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
    "sam_mask_decoder.iou_token.weight",
)

# Video-tracking parts of the official model; the image predictor never uses them.
VIDEO_ONLY_PREFIXES = (
    "memory_attention.",
    "memory_encoder.",
    "maskmem_tpos_enc",
    "no_mem_pos_enc",
    "no_obj_ptr",
    "no_obj_embed_spatial",
    "obj_ptr_proj.",
    "obj_ptr_tpos_proj.",
    "mask_downsample.",
)


def _mlp3(official: str, converted: str) -> list[tuple[str, str]]:
    """A 3-layer MLP: official layers.0 / 1 / 2 -> transformers proj_in / layers.0 / proj_out."""
    return [
        (f"{official}.layers.0.", f"{converted}.proj_in."),
        (f"{official}.layers.1.", f"{converted}.layers.0."),
        (f"{official}.layers.2.", f"{converted}.proj_out."),
    ]


def _attention(official: str, converted: str) -> list[tuple[str, str]]:
    """An attention block: q/k/v projections keep their names, out_proj becomes o_proj."""
    return [(f"{official}.{name}.", f"{converted}.{name}.") for name in ("q_proj", "k_proj", "v_proj")] + [
        (f"{official}.out_proj.", f"{converted}.o_proj.")
    ]


_TRUNK, _BACKBONE = "image_encoder.trunk", "vision_encoder.backbone"
_DECODER, _MASK_DECODER = "sam_mask_decoder", "mask_decoder"
_LAYER = f"{_DECODER}.transformer.layers.{{i}}"
_HF_LAYER = f"{_MASK_DECODER}.transformer.layers.{{i}}"

# (official prefix, transformers prefix); "{i}" stands for a layer index. Each key matches one rule.
# The rules read both ways (the tests build official-layout files from transformers models with them).
RENAME_RULES: tuple[tuple[str, str], ...] = (
    (f"{_TRUNK}.pos_embed", f"{_BACKBONE}.pos_embed"),
    (f"{_TRUNK}.pos_embed_window", f"{_BACKBONE}.pos_embed_window"),
    (f"{_TRUNK}.patch_embed.proj.", f"{_BACKBONE}.patch_embed.projection."),
    (f"{_TRUNK}.blocks.{{i}}.norm1.", f"{_BACKBONE}.blocks.{{i}}.layer_norm1."),
    (f"{_TRUNK}.blocks.{{i}}.norm2.", f"{_BACKBONE}.blocks.{{i}}.layer_norm2."),
    (f"{_TRUNK}.blocks.{{i}}.attn.", f"{_BACKBONE}.blocks.{{i}}.attn."),
    (f"{_TRUNK}.blocks.{{i}}.proj.", f"{_BACKBONE}.blocks.{{i}}.proj."),
    (f"{_TRUNK}.blocks.{{i}}.mlp.layers.0.", f"{_BACKBONE}.blocks.{{i}}.mlp.proj_in."),
    (f"{_TRUNK}.blocks.{{i}}.mlp.layers.1.", f"{_BACKBONE}.blocks.{{i}}.mlp.proj_out."),
    ("image_encoder.neck.convs.{i}.conv.", "vision_encoder.neck.convs.{i}."),
    ("sam_prompt_encoder.mask_downscaling.0.", "prompt_encoder.mask_embed.conv1."),
    ("sam_prompt_encoder.mask_downscaling.1.", "prompt_encoder.mask_embed.layer_norm1."),
    ("sam_prompt_encoder.mask_downscaling.3.", "prompt_encoder.mask_embed.conv2."),
    ("sam_prompt_encoder.mask_downscaling.4.", "prompt_encoder.mask_embed.layer_norm2."),
    ("sam_prompt_encoder.mask_downscaling.6.", "prompt_encoder.mask_embed.conv3."),
    ("sam_prompt_encoder.no_mask_embed.", "prompt_encoder.no_mask_embed."),
    ("sam_prompt_encoder.not_a_point_embed.", "prompt_encoder.not_a_point_embed."),
    *_attention(f"{_LAYER}.self_attn", f"{_HF_LAYER}.self_attn"),
    *_attention(f"{_LAYER}.cross_attn_token_to_image", f"{_HF_LAYER}.cross_attn_token_to_image"),
    *_attention(f"{_LAYER}.cross_attn_image_to_token", f"{_HF_LAYER}.cross_attn_image_to_token"),
    *[(f"{_LAYER}.norm{n}.", f"{_HF_LAYER}.layer_norm{n}.") for n in (1, 2, 3, 4)],
    (f"{_LAYER}.mlp.layers.0.", f"{_HF_LAYER}.mlp.proj_in."),
    (f"{_LAYER}.mlp.layers.1.", f"{_HF_LAYER}.mlp.proj_out."),
    *_attention(
        f"{_DECODER}.transformer.final_attn_token_to_image", f"{_MASK_DECODER}.transformer.final_attn_token_to_image"
    ),
    (f"{_DECODER}.transformer.norm_final_attn.", f"{_MASK_DECODER}.transformer.layer_norm_final_attn."),
    *[
        (f"{_DECODER}.{name}.", f"{_MASK_DECODER}.{name}.")
        for name in ("iou_token", "mask_tokens", "obj_score_token", "conv_s0", "conv_s1")
    ],
    (f"{_DECODER}.output_upscaling.0.", f"{_MASK_DECODER}.upscale_conv1."),
    (f"{_DECODER}.output_upscaling.1.", f"{_MASK_DECODER}.upscale_layer_norm."),
    (f"{_DECODER}.output_upscaling.3.", f"{_MASK_DECODER}.upscale_conv2."),
    *_mlp3(f"{_DECODER}.output_hypernetworks_mlps.{{i}}", f"{_MASK_DECODER}.output_hypernetworks_mlps.{{i}}"),
    *_mlp3(f"{_DECODER}.iou_prediction_head", f"{_MASK_DECODER}.iou_prediction_head"),
    *_mlp3(f"{_DECODER}.pred_obj_score_head", f"{_MASK_DECODER}.pred_obj_score_head"),
    ("no_mem_embed", "no_memory_embedding"),
)

# Tensors that are not a plain rename: one official matrix used twice, four embeddings stacked in one.
POSITIONAL = "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
POINT_EMBEDDINGS = "sam_prompt_encoder.point_embeddings.{i}.weight"
_POINT_EMBEDDINGS_KEY = re.compile(r"^sam_prompt_encoder\.point_embeddings\.\d+\.weight$")
POINT_EMBED = "prompt_encoder.point_embed.weight"
NUM_POINT_EMBEDDINGS = 4


def _not_renamed(key: str) -> bool:
    """Official keys dropped (video-only) or handled apart (the point embeddings, stacked below)."""
    return key.startswith(VIDEO_ONLY_PREFIXES) or _POINT_EMBEDDINGS_KEY.match(key) is not None


def rule_pattern(template: str) -> re.Pattern[str]:
    """A rule template as an anchored regex (a template ending in "." is a prefix, else a whole key)."""
    body = re.escape(template).replace(re.escape("{i}"), r"(\d+)")
    return re.compile(f"^{body}" if template.endswith(".") else f"^{body}$")


def fill_rule(template: str, match: re.Match[str], key: str) -> str:
    """Apply a matched rule: the other side's template with the same index, then the rest of the key."""
    filled = template.replace("{i}", match.group(1)) if "{i}" in template else template
    return filled + key[match.end() :]


_TO_TRANSFORMERS = tuple((rule_pattern(official), converted) for official, converted in RENAME_RULES)


def rename_with(key: str, rules: tuple[tuple[re.Pattern[str], str], ...]) -> str | None:
    """The key renamed by the first (pattern, template) rule that matches it, or None."""
    for pattern, target in rules:
        if match := pattern.match(key):
            return fill_rule(target, match, key)
    return None


def rename_sam2_key(key: str) -> str | None:
    """The transformers name of one official key (None when it has no plain rename)."""
    return rename_with(key, _TO_TRANSFORMERS)


@dataclass(frozen=True)
class HieraVariant:
    """The trunk hyper-parameters of one official SAM 2.1 model."""

    name: str
    width: int
    blocks_per_stage: tuple[int, int, int, int]
    heads: int
    global_blocks: tuple[int, ...]
    window_spec: tuple[int, int, int, int]
    background_size: int

    def config(self) -> Sam2Config:
        """The transformers `Sam2Config` of this variant (prompt encoder and decoder standard)."""
        dims = [self.width * 2**stage for stage in range(4)]
        return Sam2Config(
            vision_config={
                "backbone_config": {
                    "model_type": "sam2_hiera_det_model",
                    "hidden_size": self.width,
                    "num_attention_heads": self.heads,
                    "blocks_per_stage": list(self.blocks_per_stage),
                    "embed_dim_per_stage": dims,
                    "num_attention_heads_per_stage": [self.heads * 2**stage for stage in range(4)],
                    "window_size_per_stage": list(self.window_spec),
                    "global_attention_blocks": list(self.global_blocks),
                    "window_positional_embedding_background_size": [self.background_size] * 2,
                },
                "backbone_channel_list": dims[::-1],
            }
        )


# From sam2/configs/sam2.1/sam2.1_hiera_{t,s,b+,l}.yaml (b+ uses the Hiera defaults of hieradet.py).
OFFICIAL_VARIANTS = (
    HieraVariant("sam2.1_hiera_tiny", 96, (1, 2, 7, 2), 1, (5, 7, 9), (8, 4, 14, 7), 7),
    HieraVariant("sam2.1_hiera_small", 96, (1, 2, 11, 2), 1, (7, 10, 13), (8, 4, 14, 7), 7),
    HieraVariant("sam2.1_hiera_base_plus", 112, (2, 3, 16, 3), 2, (12, 16, 20), (8, 4, 14, 7), 14),
    HieraVariant("sam2.1_hiera_large", 144, (2, 6, 36, 4), 2, (23, 33, 43), (8, 4, 16, 8), 7),
)


def is_sam2_state_dict(state_dict: Mapping[str, object]) -> bool:
    """True when the keys look like an official SAM 2 / 2.1 checkpoint."""
    return all(key in state_dict for key in SAM2_SIGNATURE)


def read_trunk_shape(state_dict: Mapping[str, torch.Tensor]) -> tuple[int, tuple[int, ...]]:
    """(trunk width, blocks per stage): a stage starts at each block with a `proj` (width change)."""
    width = state_dict[f"{_TRUNK}.patch_embed.proj.weight"].shape[0]
    block = re.compile(rf"{re.escape(_TRUNK)}\.blocks\.(\d+)\.")
    depth = 1 + max((int(m.group(1)) for key in state_dict if (m := block.match(key))), default=-1)
    starts = [0] + [i for i in range(depth) if f"{_TRUNK}.blocks.{i}.proj.weight" in state_dict] + [depth]
    return width, tuple(b - a for a, b in zip(starts, starts[1:]))


def detect_variant(state_dict: Mapping[str, torch.Tensor], source: str) -> HieraVariant:
    """The official variant whose trunk has these shapes; CheckpointError naming `source` otherwise."""
    width, stages = read_trunk_shape(state_dict)
    for variant in OFFICIAL_VARIANTS:
        if (variant.width, variant.blocks_per_stage) == (width, stages):
            return variant
    raise CheckpointError(
        f"{source}: Hiera trunk of width {width} with blocks per stage {list(stages)} is none of the official "
        "SAM 2.1 models (tiny, small, base_plus, large); convert it to a transformers folder to load it"
    )


def convert_sam2_state_dict(state_dict: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Official SAM 2.1 state dict -> transformers `Sam2Model` state dict in float32.

    Video-only tensors are dropped; any other key without a counterpart raises CheckpointError.
    """
    converted = rename_tensors(state_dict, rename_sam2_key, POSITIONAL, "SAM 2.1", source, skip=_not_renamed)
    try:
        points = [state_dict[POINT_EMBEDDINGS.format(i=i)].float() for i in range(NUM_POINT_EMBEDDINGS)]
    except KeyError as error:
        raise CheckpointError(f"{source}: not a complete SAM 2.1 checkpoint ({error} missing)") from None
    converted[POINT_EMBED] = torch.cat(points, dim=0)
    return converted


def build_sam2_model(state_dict: Mapping[str, torch.Tensor], source: str) -> Sam2Model:
    """An official SAM 2.1 state dict as a `Sam2Model` of its variant (strict: all keys, all shapes)."""
    variant = detect_variant(state_dict, source)
    return load_converted(Sam2Model, variant.config(), convert_sam2_state_dict(state_dict, source), source)
