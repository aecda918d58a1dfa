"""HQ-SAM backend: transformers' `SamHQModel` with the official segment-anything-hq mask decoder.

transformers 5.24's `SamHQMaskDecoder.forward` upscales the image embeddings it was given (plus the
dense prompt, with height and width swapped) instead of the two-way transformer's output, so every
mask it predicts differs from the authors' model. `HQMaskDecoder` overrides that forward with the
official computation (segment_anything_hq/modeling/mask_decoder_hq.py); the weights are unchanged.

As the authors' refiner uses it (`use_samhq=True`, multimask mode, `hq_token_only=False`), decoding
gives ONE candidate per object: the SAM mask with the highest predicted IoU among the three multimask
outputs plus the HQ token's mask, with that IoU as its score. The early ViT features it fuses (the
first global-attention block's output) are kept in `Encoding.features["interm_embeddings"]`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from transformers import SamHQModel
from transformers.models.sam_hq.modeling_sam_hq import SamHQMaskDecoder

from samrefiner.models.base import Encoding
from samrefiner.models.convert_hq import convert_hq_state_dict, is_hq_state_dict
from samrefiner.models.convert_sam import load_converted
from samrefiner.models.sam import SamBackend

INTERM_KEY = "interm_embeddings"


class HQMaskDecoder(SamHQMaskDecoder):
    """`SamHQMaskDecoder` computing what the official HQ-SAM decoder computes (same parameters)."""

    def hq_features(self, image_embeddings: torch.Tensor, vit_features: torch.Tensor) -> torch.Tensor:
        """Fusion of the final embedding and the early ViT features (B, H, W, C): (B, C/8, 4H, 4W)."""
        encoded = self.encoder_conv2(self.activation(self.encoder_norm(self.encoder_conv1(image_embeddings))))
        vit = vit_features.permute(0, 3, 1, 2)
        compressed = self.compress_vit_conv2(self.activation(self.compress_vit_norm(self.compress_vit_conv1(vit))))
        return encoded + compressed

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_positional_embeddings: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        hq_token_only: bool,
        intermediate_embeddings: list[torch.Tensor] | None = None,
        attention_similarity: torch.Tensor | None = None,
        target_embedding: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks (B, P, 1, 256, 256) and IoU (B, P, 1) in multimask mode, as the official decoder.

        `intermediate_embeddings[0]` holds one row per image; when it has a single row, the rows of
        `image_embeddings` are copies of that image (one per object) and the HQ features are computed
        once, as the official decoder does.
        """
        if not intermediate_embeddings:
            raise ValueError("the HQ-SAM decoder needs the encoder's intermediate embeddings")
        batch, channels, height, width = image_embeddings.shape
        prompts = sparse_prompt_embeddings.shape[1]
        vit_features = intermediate_embeddings[0]
        images = vit_features.shape[0]
        hq_features = self.hq_features(image_embeddings[:images], vit_features)
        if images > 1:
            hq_features = hq_features.repeat_interleave(prompts, 0)

        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight, self.hq_token.weight], dim=0)
        tokens = torch.cat([output_tokens.repeat(batch, prompts, 1, 1), sparse_prompt_embeddings], dim=2)
        source = (image_embeddings + dense_prompt_embeddings).repeat_interleave(prompts, 0)
        positions = image_positional_embeddings.repeat_interleave(prompts, 0)
        queries, keys = self.transformer(
            point_embeddings=tokens.to(self.iou_token.weight.dtype),
            image_embeddings=source,
            image_positional_embeddings=positions,
            attention_similarity=attention_similarity,
            target_embedding=target_embedding,
        )
        # the fix: upscale the transformer's output (keys), laid out as (B * P, C, H, W)
        attended = keys.transpose(2, 3).reshape(batch * prompts, channels, height, width)
        upscaled = self.activation(self.upscale_layer_norm(self.upscale_conv1(attended)))
        upscaled = self.activation(self.upscale_conv2(upscaled))
        upscaled_hq = self.mask_conv2(self.activation(self.mask_norm(self.mask_conv1(upscaled)))) + hq_features

        masks_sam, masks_hq = self.token_masks(queries, upscaled, upscaled_hq, batch, prompts)
        iou = self.iou_prediction_head(queries[:, :, 0])
        sam_tokens = self.num_mask_tokens - 1  # the HQ token comes last
        if multimask_output:  # the multimask output with the highest predicted IoU
            iou, best = iou[:, :, 1:sam_tokens].max(dim=2, keepdim=True)
            index = best[..., None, None].expand(-1, -1, -1, *masks_sam.shape[-2:])
            masks_sam = torch.gather(masks_sam[:, :, 1:sam_tokens], 2, index)
        else:
            iou, masks_sam = iou[:, :, :1], masks_sam[:, :, :1]
        return (masks_hq if hq_token_only else masks_sam + masks_hq), iou

    def token_masks(
        self, queries: torch.Tensor, upscaled: torch.Tensor, upscaled_hq: torch.Tensor, batch: int, prompts: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The SAM tokens' masks (B, P, T, H, W) from `upscaled` and the HQ token's (B, P, 1, H, W)
        from `upscaled_hq`, each token's hypernetwork MLP applied to its transformer output."""
        sam_tokens = self.num_mask_tokens - 1  # the HQ token comes last
        hyper_in = torch.stack(
            [self.output_hypernetworks_mlps[i](queries[:, :, 1 + i]) for i in range(sam_tokens)]
            + [self.hq_mask_mlp(queries[:, :, 1 + sam_tokens])],
            dim=2,
        )
        _, mask_channels, mask_h, mask_w = upscaled.shape
        flat = (batch, prompts, mask_channels, mask_h * mask_w)
        masks_sam = (hyper_in[:, :, :sam_tokens] @ upscaled.reshape(flat)).reshape(batch, prompts, -1, mask_h, mask_w)
        masks_hq = (hyper_in[:, :, sam_tokens:] @ upscaled_hq.reshape(flat)).reshape(batch, prompts, 1, mask_h, mask_w)
        return masks_sam, masks_hq


def use_official_decoder(model: SamHQModel) -> SamHQModel:
    """Make `model` decode with `HQMaskDecoder` (in place; the parameters stay as they are)."""
    model.mask_decoder.__class__ = HQMaskDecoder
    return model


class SamHQBackend(SamBackend):
    """HQ-SAM (ViT-B/L/H or a reduced encoder): one candidate per object, `iou_scores` (N, 1)."""

    kind = "sam_hq"
    model_class = SamHQModel

    def __init__(self, model: SamHQModel, name: str, device: str | torch.device = "cpu") -> None:
        super().__init__(use_official_decoder(model), name, device)

    @classmethod
    def matches_state_dict(cls, state_dict: Mapping[str, torch.Tensor]) -> bool:
        """True for an official HQ-SAM key layout."""
        return is_hq_state_dict(state_dict)

    @classmethod
    def from_state_dict(
        cls, state_dict: Mapping[str, torch.Tensor], source: str, device: str | torch.device = "cpu"
    ) -> SamHQBackend:
        """An HQ-SAM backend from an official-layout state dict (float32 tensors)."""
        return cls(build_hq_model(state_dict, source), source, device)

    def _embed(self, pixels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        embeddings, intermediate = self.model.get_image_embeddings(pixels)
        return embeddings, {INTERM_KEY: intermediate[0]}

    def _decoder_inputs(self, encoding: Encoding) -> dict[str, object]:
        """The authors' call: multimask output plus the HQ mask, early ViT features fused."""
        return {"hq_token_only": False, "intermediate_embeddings": [encoding.features[INTERM_KEY].to(self.device)]}


def build_hq_model(state_dict: Mapping[str, torch.Tensor], source: str) -> SamHQModel:
    """Convert an official HQ-SAM state dict and load it into a `SamHQModel` (strict: all keys, all shapes)."""
    converted, config = convert_hq_state_dict(state_dict, source)
    return load_converted(SamHQModel, config, converted, source)
