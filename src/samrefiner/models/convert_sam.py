"""Official SAM state dicts (segment-anything key layout) -> transformers `SamModel` keys and config.

The encoder's width, depth, heads, MLP width, global-attention blocks and window size are read from
the tensor shapes, so any variant (ViT-B/L/H or a reduced test encoder) converts without a name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import torch
from transformers import PreTrainedConfig, PreTrainedModel, SamConfig, SamModel

from samrefiner.errors import CheckpointError

# Keys whose presence marks a state dict as an official SAM checkpoint.
SAM_SIGNATURE = (
    "image_encoder.patch_embed.proj.weight",
    "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
    "mask_decoder.iou_token.weight",
)

EMBEDDING_GRID = 64  # 1024 / 16: a global-attention block's rel_pos has 2 * 64 - 1 rows
# segment_anything's TwoWayAttentionBlock uses nn.LayerNorm's default eps, 1e-5; transformers'
# SamMaskDecoderConfig defaults to 1e-6 (it moves trained logits by up to 2e-2: LiteMedSAM, measured).
OFFICIAL_DECODER_LAYER_NORM_EPS = 1e-5

# (official regex, transformers replacement), applied in order; the first match wins.
_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^image_encoder\.pos_embed$", "vision_encoder.pos_embed"),
    (r"^image_encoder\.patch_embed\.proj\.", "vision_encoder.patch_embed.projection."),
    (r"^image_encoder\.blocks\.(\d+)\.norm(\d)\.", r"vision_encoder.layers.\1.layer_norm\2."),
    (r"^image_encoder\.blocks\.(\d+)\.(attn|mlp)\.", r"vision_encoder.layers.\1.\2."),
    (r"^image_encoder\.neck\.0\.", "vision_encoder.neck.conv1."),
    (r"^image_encoder\.neck\.1\.", "vision_encoder.neck.layer_norm1."),
    (r"^image_encoder\.neck\.2\.", "vision_encoder.neck.conv2."),
    (r"^image_encoder\.neck\.3\.", "vision_encoder.neck.layer_norm2."),
    (r"^prompt_encoder\.point_embeddings\.(\d)\.", r"prompt_encoder.point_embed.\1."),
    (r"^prompt_encoder\.mask_downscaling\.0\.", "prompt_encoder.mask_embed.conv1."),
    (r"^prompt_encoder\.mask_downscaling\.1\.", "prompt_encoder.mask_embed.layer_norm1."),
    (r"^prompt_encoder\.mask_downscaling\.3\.", "prompt_encoder.mask_embed.conv2."),
    (r"^prompt_encoder\.mask_downscaling\.4\.", "prompt_encoder.mask_embed.layer_norm2."),
    (r"^prompt_encoder\.mask_downscaling\.6\.", "prompt_encoder.mask_embed.conv3."),
    (r"^prompt_encoder\.(no_mask_embed|not_a_point_embed)\.", r"prompt_encoder.\1."),
    (r"^mask_decoder\.transformer\.norm_final_attn\.", "mask_decoder.transformer.layer_norm_final_attn."),
    (r"^mask_decoder\.transformer\.layers\.(\d+)\.norm(\d)\.", r"mask_decoder.transformer.layers.\1.layer_norm\2."),
    (r"^mask_decoder\.transformer\.", "mask_decoder.transformer."),
    (r"^mask_decoder\.(iou_token|mask_tokens)\.", r"mask_decoder.\1."),
    (r"^mask_decoder\.output_upscaling\.0\.", "mask_decoder.upscale_conv1."),
    (r"^mask_decoder\.output_upscaling\.1\.", "mask_decoder.upscale_layer_norm."),
    (r"^mask_decoder\.output_upscaling\.3\.", "mask_decoder.upscale_conv2."),
    # 3-layer MLPs: official layers.0 / 1 / 2 -> transformers proj_in / layers.0 / proj_out
    (r"^mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.layers\.0\.", r"mask_decoder.\1.proj_in."),
    (r"^mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.layers\.1\.", r"mask_decoder.\1.layers.0."),
    (r"^mask_decoder\.(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.layers\.2\.", r"mask_decoder.\1.proj_out."),
)
_COMPILED = tuple((re.compile(pattern), replacement) for pattern, replacement in _RENAMES)

# The prompt encoder's random Fourier matrix is one tensor used in two places in transformers.
_POSITIONAL = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
POSITIONAL_TARGETS = (
    "shared_image_embedding.positional_embedding",
    "prompt_encoder.shared_embedding.positional_embedding",
)

ModelT = TypeVar("ModelT", bound=PreTrainedModel)

_VARIANTS = {(768, 12): "vit_b", (1024, 24): "vit_l", (1280, 32): "vit_h"}


@dataclass(frozen=True)
class EncoderShape:
    """The image encoder's hyper-parameters, as read from a state dict."""

    width: int
    depth: int
    heads: int
    mlp_dim: int
    global_blocks: tuple[int, ...]
    window_size: int

    @property
    def variant(self) -> str:
        """ "vit_b", "vit_l", "vit_h", or "custom" for any other encoder."""
        return _VARIANTS.get((self.width, self.depth), "custom")


def is_sam_state_dict(state_dict: Mapping[str, object]) -> bool:
    """True when the keys look like an official SAM checkpoint."""
    return all(key in state_dict for key in SAM_SIGNATURE)


def read_encoder_shape(state_dict: Mapping[str, torch.Tensor]) -> EncoderShape:
    """Read width, depth, heads, MLP width, global-attention blocks and window size from shapes."""
    width = state_dict["image_encoder.patch_embed.proj.weight"].shape[0]
    block_ids = {int(m.group(1)) for k in state_dict if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))}
    depth = max(block_ids) + 1 if block_ids else 0
    rel_rows = [state_dict[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape[0] for i in range(depth)]
    head_dim = state_dict["image_encoder.blocks.0.attn.rel_pos_h"].shape[1]
    global_rows = 2 * EMBEDDING_GRID - 1
    windowed = [rows for rows in rel_rows if rows != global_rows]
    return EncoderShape(
        width=width,
        depth=depth,
        heads=width // head_dim,
        mlp_dim=state_dict["image_encoder.blocks.0.mlp.lin1.weight"].shape[0],
        global_blocks=tuple(i for i, rows in enumerate(rel_rows) if rows == global_rows),
        window_size=(windowed[0] + 1) // 2 if windowed else 14,
    )


def sam_config(shape: EncoderShape) -> SamConfig:
    """A transformers `SamConfig` for an encoder of this shape (prompt encoder and decoder standard,
    with the official LayerNorm eps in the decoder's two-way attention blocks)."""
    return SamConfig(
        vision_config={
            "hidden_size": shape.width,
            "num_hidden_layers": shape.depth,
            "num_attention_heads": shape.heads,
            "mlp_dim": shape.mlp_dim,
            "global_attn_indexes": list(shape.global_blocks),
            "window_size": shape.window_size,
        },
        mask_decoder_config={"layer_norm_eps": OFFICIAL_DECODER_LAYER_NORM_EPS},
    )


def rename_key(key: str) -> str | None:
    """The transformers name of one official key (None when the key has no counterpart)."""
    for pattern, replacement in _COMPILED:
        if pattern.search(key):
            return pattern.sub(replacement, key, count=1)
    return None


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor], source: str
) -> tuple[dict[str, torch.Tensor], SamConfig]:
    """Official SAM state dict -> (transformers state dict in float32, matching `SamConfig`).

    Raises CheckpointError naming `source` when a key has no transformers counterpart.
    """
    try:
        shape = read_encoder_shape(state_dict)
    except (KeyError, IndexError, AttributeError) as error:
        raise CheckpointError(f"{source}: not a complete SAM checkpoint (image encoder key {error} missing)") from None
    return rename_tensors(state_dict, rename_key, _POSITIONAL, "SAM", source), sam_config(shape)


def rename_tensors(
    state_dict: Mapping[str, torch.Tensor],
    rename: Callable[[str], str | None],
    positional: str,
    family: str,
    source: str,
    skip: Callable[[str], bool] = lambda key: False,
) -> dict[str, torch.Tensor]:
    """Float32 tensors under their transformers names; the `positional` matrix goes to both its copies.

    Raises CheckpointError naming `source` for a key that `rename` does not know and `skip` does not drop.
    """
    converted: dict[str, torch.Tensor] = {}
    unmapped: list[str] = []
    for key, tensor in state_dict.items():
        value = tensor.float() if tensor.is_floating_point() else tensor
        if key == positional:
            converted.update({target: value for target in POSITIONAL_TARGETS})
        elif (new_key := rename(key)) is not None:
            converted[new_key] = value
        elif not skip(key):
            unmapped.append(key)
    if unmapped:
        raise CheckpointError(f"{source}: {len(unmapped)} keys are not part of {family} (first: {unmapped[0]})")
    return converted


def layout_mismatches(converted: Mapping[str, torch.Tensor], model: torch.nn.Module) -> list[str]:
    """Differences between converted tensors and the model's parameters: missing, unexpected, shape."""
    expected = model.state_dict()
    problems = [f"missing {key}" for key in expected if key not in converted]
    problems += [f"unexpected {key}" for key in converted if key not in expected]
    problems += [
        f"shape of {key}: {tuple(converted[key].shape)} vs {tuple(expected[key].shape)}"
        for key in converted
        if key in expected and converted[key].shape != expected[key].shape
    ]
    return problems


def build_sam_model(state_dict: Mapping[str, torch.Tensor], source: str) -> SamModel:
    """Convert an official SAM state dict and load it into a `SamModel` (strict: all keys, all shapes)."""
    converted, config = convert_state_dict(state_dict, source)
    return load_converted(SamModel, config, converted, source)


def load_converted(
    model_class: type[ModelT], config: PreTrainedConfig, converted: Mapping[str, torch.Tensor], source: str
) -> ModelT:
    """`model_class(config)` holding exactly the converted tensors; CheckpointError naming `source` if not."""
    with torch.device("meta"):
        model = model_class(config)
    return load_exactly(model, converted, source, f"a {model_class.__name__}")


def load_exactly(model: ModelT, converted: Mapping[str, torch.Tensor], source: str, described: str) -> ModelT:
    """`model` (built on the meta device) holding exactly the converted tensors, in eval mode (strict: all
    keys, all shapes); if they do not fit, CheckpointError "`source`: does not fit `described`: ..." naming
    the first mismatch and how many more there are."""
    problems = layout_mismatches(converted, model)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CheckpointError(f"{source}: does not fit {described}: {problems[0]}{more}")
    model.load_state_dict(converted, strict=True, assign=True)
    return model.eval()
