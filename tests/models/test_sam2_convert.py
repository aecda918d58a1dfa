"""Official SAM 2.1 checkpoints (sam2.1_hiera_*.pt) -> transformers Sam2Model: the CONVERSION only.

These tests make official-layout files from a small random transformers Sam2Model by inverting the
converter's mapping (`sam2_official_layout`, test-only), plus the video-only tensors an official file
also holds, and check that reading them back gives the same tensors: a round trip through our own
mapping, so it shows the renaming is complete and one-to-one, not that our SAM 2.1 computes what the
official code computes. That is `test_sam2_official_parity.py`, against the official predictor's
outputs. Where the layout comes from (facebookresearch/sam2, read for these tests):
- `sam2/build_sam.py` `_load_checkpoint`: the file is `{"model": state_dict}`;
- `sam2/modeling/sam2_base.py`: top-level `image_encoder`, `sam_prompt_encoder`, `sam_mask_decoder`,
  `no_mem_embed`, and the video-only `memory_attention`, `memory_encoder`, `maskmem_tpos_enc`,
  `no_mem_pos_enc`, `no_obj_ptr`, `obj_ptr_proj`, `obj_ptr_tpos_proj`, `mask_downsample`
  (`no_obj_embed_spatial` from the SAM 2.1 configs' `no_obj_embed_spatial: true`);
- `sam2/modeling/backbones/hieradet.py`: `trunk.pos_embed`, `trunk.pos_embed_window`,
  `trunk.patch_embed.proj`, `trunk.blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.layers.0/1,proj}`;
- `sam2/modeling/backbones/image_encoder.py`: `neck.convs.N.conv`;
- `sam2/modeling/sam/transformer.py`: `layers.N.{self_attn,cross_attn_token_to_image,
  cross_attn_image_to_token}.{q,k,v,out}_proj`, `norm1..4`, `mlp.layers.0/1`,
  `final_attn_token_to_image`, `norm_final_attn`;
- `sam2/modeling/sam/mask_decoder.py`: `iou_token`, `mask_tokens`, `obj_score_token`,
  `output_upscaling.{0,1,3}`, `conv_s0`, `conv_s1`, `output_hypernetworks_mlps.N.layers.0-2`,
  `iou_prediction_head.layers.0-2`, `pred_obj_score_head.layers.0-2`;
- `sam2/modeling/sam/prompt_encoder.py` (as segment-anything): `pe_layer.positional_encoding_gaussian_matrix`,
  `point_embeddings.0-3`, `not_a_point_embed`, `no_mask_embed`, `mask_downscaling.{0,1,3,4,6}`;
- `sam2/configs/sam2.1/sam2.1_hiera_{t,s,b+,l}.yaml`: the four variants' trunk settings.
"""

from __future__ import annotations

import pytest
import torch
from test_models_sam2 import tiny_sam2
from transformers import Sam2Model

from sam2_official_layout import official_sam2_key, to_official_state_dict
from samrefiner import load_model
from samrefiner.errors import CheckpointError
from samrefiner.models.convert_sam2 import (
    OFFICIAL_VARIANTS,
    build_sam2_model,
    convert_sam2_state_dict,
    detect_variant,
    rename_sam2_key,
)

# Video-only tensors of an official SAM 2.1 file (names from sam2_base.py / memory_*.py), small shapes.
VIDEO_ONLY = {
    "maskmem_tpos_enc": (7, 1, 1, 64),
    "no_mem_pos_enc": (1, 1, 256),
    "no_obj_ptr": (1, 256),
    "no_obj_embed_spatial": (1, 64),
    "obj_ptr_proj.layers.0.weight": (256, 256),
    "obj_ptr_tpos_proj.weight": (64, 256),
    "mask_downsample.weight": (1, 1, 4, 4),
    "memory_attention.layers.0.self_attn.q_proj.weight": (256, 256),
    "memory_attention.norm.weight": (256,),
    "memory_encoder.mask_downsampler.encoder.0.weight": (4, 1, 3, 3),
    "memory_encoder.fuser.layers.0.dwconv.weight": (256, 1, 7, 7),
    "memory_encoder.out_proj.weight": (64, 256, 1, 1),
}


def small_sam2() -> Sam2Model:
    """test_models_sam2's tiny random SAM 2.1 (Hiera trunk of width 8, one decoder layer), every
    parameter nudged off its initial value: zero- or one-initialised tensors would hide a swapped name."""
    model = tiny_sam2()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.02)
        # one official matrix, two copies in transformers
        shared = model.prompt_encoder.shared_embedding.positional_embedding
        model.shared_image_embedding.positional_embedding.copy_(shared)
    return model


def official_layout(model: Sam2Model) -> dict[str, torch.Tensor]:
    """`model` as an official checkpoint's state dict, video-only tensors included."""
    state_dict = to_official_state_dict(model.state_dict())
    state_dict.update({key: torch.randn(shape) for key, shape in VIDEO_ONLY.items()})
    return state_dict


# Spot checks of the mapping: official names (read in the files above) -> transformers names.
OFFICIAL_TO_TRANSFORMERS = [
    ("image_encoder.trunk.blocks.3.mlp.layers.1.weight", "vision_encoder.backbone.blocks.3.mlp.proj_out.weight"),
    ("image_encoder.neck.convs.2.conv.bias", "vision_encoder.neck.convs.2.bias"),
    ("image_encoder.trunk.pos_embed", "vision_encoder.backbone.pos_embed"),
    ("image_encoder.trunk.pos_embed_window", "vision_encoder.backbone.pos_embed_window"),
    (
        "sam_mask_decoder.transformer.layers.1.cross_attn_image_to_token.out_proj.weight",
        "mask_decoder.transformer.layers.1.cross_attn_image_to_token.o_proj.weight",
    ),
    (
        "sam_mask_decoder.output_hypernetworks_mlps.2.layers.1.bias",
        "mask_decoder.output_hypernetworks_mlps.2.layers.0.bias",
    ),
    ("sam_mask_decoder.pred_obj_score_head.layers.2.weight", "mask_decoder.pred_obj_score_head.proj_out.weight"),
    ("sam_mask_decoder.output_upscaling.1.weight", "mask_decoder.upscale_layer_norm.weight"),
    ("sam_prompt_encoder.mask_downscaling.4.weight", "prompt_encoder.mask_embed.layer_norm2.weight"),
    ("no_mem_embed", "no_memory_embedding"),
]


@pytest.mark.parametrize(("official", "converted"), OFFICIAL_TO_TRANSFORMERS)
def test_official_key_names(official, converted):
    assert rename_sam2_key(official) == converted
    assert official_sam2_key(converted) == official


def test_video_only_keys_have_no_counterpart():
    assert all(rename_sam2_key(key) is None for key in VIDEO_ONLY)


def test_round_trip_loads_strictly_and_gives_identical_outputs():
    """Conversion check: official layout and back is the identity (not evidence of parity)."""
    model = small_sam2()
    official = official_layout(model)
    assert "sam_prompt_encoder.point_embeddings.3.weight" in official
    assert "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix" in official

    converted = convert_sam2_state_dict(official, "sam2.1_small.pt")
    reference = model.state_dict()
    assert converted.keys() == reference.keys()  # video-only tensors dropped, nothing missing
    assert all(torch.equal(converted[key], reference[key]) for key in reference)

    reloaded = Sam2Model(model.config).eval()
    reloaded.load_state_dict(converted, strict=True)
    pixels = torch.randn(1, 3, 1024, 1024)
    points, labels = torch.tensor([[[[300.0, 400.0], [700.0, 100.0]]]]), torch.tensor([[[1, 0]]])
    prompts = {"input_points": points, "input_labels": labels}
    with torch.inference_mode():
        expected, actual = model(pixel_values=pixels, **prompts), reloaded(pixel_values=pixels, **prompts)
    assert torch.equal(expected.pred_masks, actual.pred_masks)
    assert torch.equal(expected.iou_scores, actual.iou_scores)


@pytest.mark.parametrize("variant", OFFICIAL_VARIANTS, ids=lambda variant: variant.name)
def test_variant_is_read_from_shapes(variant):
    with torch.device("meta"):
        official = to_official_state_dict(Sam2Model(variant.config()).state_dict())
    assert detect_variant(official, "x.pt") is variant


def test_unknown_trunk_and_unknown_keys_are_refused():
    official = official_layout(small_sam2())
    with pytest.raises(CheckpointError, match=r"small\.pt: Hiera trunk of width 8 .* none of the official"):
        build_sam2_model(official, "small.pt")
    official["sam_mask_decoder.extra_head.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"odd\.pt: 1 keys are not part of SAM 2.1 \(first: sam_mask_decoder"):
        convert_sam2_state_dict(official, "odd.pt")


def test_load_model_reads_an_official_tiny_checkpoint(tmp_path):
    """A file shaped like sam2.1_hiera_tiny.pt ({"model": ...}, float16 to keep it small) loads by path."""
    tiny = next(variant for variant in OFFICIAL_VARIANTS if variant.name == "sam2.1_hiera_tiny")
    torch.manual_seed(1)
    with torch.device("meta"):
        layout = to_official_state_dict(Sam2Model(tiny.config()).state_dict())
    state_dict = {key: torch.randn(tensor.shape, dtype=torch.float16) for key, tensor in layout.items()}
    state_dict.update({key: torch.randn(shape, dtype=torch.float16) for key, shape in VIDEO_ONLY.items()})
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": state_dict}, path)

    backend = load_model(str(path))
    assert backend.kind == "sam2"
    weights = backend.model.state_dict()
    official_qkv = state_dict["image_encoder.trunk.blocks.11.attn.qkv.weight"]
    assert torch.equal(weights["vision_encoder.backbone.blocks.11.attn.qkv.weight"], official_qkv.float())
    assert backend.model.config.vision_config.backbone_config.global_attention_blocks == [5, 7, 9]
