"""SAM's mask decoder (prompt tokens + image embedding -> 3 candidate masks and their IoU), computed
with transformers' own weights in fewer operations.

transformers' `SamMaskDecoder` projects every object's 4096 image tokens to queries, keys and values
for each cross-attention, splits them into heads (copies), and runs the 2x2 transposed convolutions
channels-first. With objects in the batch dimension that work, not the attention itself, dominates.
The same function is computed here with three exact rewrites (equal up to float rounding):

- tokens -> image: the scores q . (W_k x + b_k) are x . (W_k^T q) plus a term constant over the image
  tokens (it cancels in the softmax); the output W_v (sum_n a_n x_n) + b_v uses that the attention
  weights sum to one. The image tokens are only read twice, never projected.
- image -> tokens: (W_q x + b_q) . k = x . (W_q^T k) + b_q . k, and the output projection is folded into
  the few token values, so the image side is two (N x 256) @ (256 x 8T) products.
- upscaling: a stride-2, 2x2 transposed convolution is one matrix product per pixel followed by a
  pixel shuffle; staying channels-last makes the layer norm and GELU contiguous, and the shuffle is
  done once, on the three output masks.

`test_throughput.py` checks it against `SamMaskDecoder.forward`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.models.sam.modeling_sam import SamAttention, SamModel, SamTwoWayAttentionBlock


class FusedSamDecoder(torch.nn.Module):
    """Multimask decoding of a transformers `SamModel` for B objects of one image (the model's own
    prompt encoder and mask decoder modules, so hooks on them and `compile()` apply)."""

    def __init__(self, model: SamModel, image_positional_embeddings: torch.Tensor) -> None:
        super().__init__()
        self.prompt_encoder = model.prompt_encoder
        self.decoder = model.mask_decoder
        self.register_buffer("image_pe", _tokens(image_positional_embeddings), persistent=False)  # (1, N, C)

    def forward(
        self,
        embeddings: torch.Tensor,
        points: torch.Tensor | None,
        labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, C, 64, 64) image embedding and B objects' prompts (as `SamPromptEncoder` takes them)
        -> (B, 3, 256, 256) low-res logits and (B, 3) predicted IoU."""
        sparse, _ = self.prompt_encoder(input_points=points, input_labels=labels, input_boxes=boxes, input_masks=None)
        decoder = self.decoder
        batch = _batch_size(points, boxes, masks)
        output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight])
        tokens = output_tokens.expand(batch, -1, -1)
        if sparse is not None:
            tokens = torch.cat([tokens, sparse[:, 0].to(tokens.dtype)], dim=1)
        keys = self._image_tokens(embeddings, masks, batch)
        queries, keys = self._two_way(tokens, keys)
        count = decoder.num_mask_tokens
        hyper = torch.stack(
            [decoder.output_hypernetworks_mlps[i](queries[:, i + 1]) for i in range(1, count)], dim=1
        )  # (B, 3, C / 8): the multimask tokens only
        iou = decoder.iou_prediction_head(queries[:, 0])[:, 1:]
        return self._masks(keys, hyper), iou

    def _image_tokens(self, embeddings: torch.Tensor, masks: torch.Tensor | None, batch: int) -> torch.Tensor:
        """Image embedding plus each object's dense prompt embedding, channels-last: (B, N, C)."""
        image = _tokens(embeddings)
        if masks is None:
            return (image + self.prompt_encoder.no_mask_embed.weight).expand(batch, -1, -1)
        embed = self.prompt_encoder.mask_embed
        hidden = embed.activation(embed.layer_norm1(embed.conv1(masks)))
        hidden = embed.activation(embed.layer_norm2(embed.conv2(hidden)))  # (B, 16, 64, 64)
        weight = embed.conv3.weight.flatten(1)  # 1x1 convolution = a linear map per pixel
        return torch.baddbmm(image + embed.conv3.bias, _tokens(hidden), weight.t().expand(batch, -1, -1))

    def _two_way(self, queries: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`SamTwoWayTransformer`: (B, T, C) tokens and (B, N, C) image tokens, both updated."""
        transformer = self.decoder.transformer
        query_pe = queries
        for layer in transformer.layers:
            queries, keys = self._block(layer, queries, keys, query_pe)
        attended = _tokens_to_image(
            transformer.final_attn_token_to_image, queries + query_pe, keys + self.image_pe, keys
        )
        return transformer.layer_norm_final_attn(queries + attended), keys

    def _block(
        self, layer: SamTwoWayAttentionBlock, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if layer.skip_first_layer_pe:
            queries = _self_attention(layer.self_attn, queries, queries)
        else:
            queries = queries + _self_attention(layer.self_attn, queries + query_pe, queries)
        queries = layer.layer_norm1(queries)
        keys_pe = keys + self.image_pe  # the same in both cross-attentions of the block
        queries = layer.layer_norm2(
            queries + _tokens_to_image(layer.cross_attn_token_to_image, queries + query_pe, keys_pe, keys)
        )
        queries = layer.layer_norm3(queries + layer.mlp(queries))
        keys = _image_to_tokens(layer.cross_attn_image_to_token, keys_pe, queries + query_pe, queries, keys)
        return queries, layer.layer_norm4(keys)

    def _masks(self, keys: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
        """Upscale (B, N, C) 4x with the two transposed convolutions and apply the (B, 3, C / 8)
        hypernetwork weights: (B, 3, 256, 256)."""
        decoder = self.decoder
        batch, tokens, _ = keys.shape
        side = int(round(tokens**0.5))
        norm = decoder.upscale_layer_norm
        first = _subpixel_linear(keys, decoder.upscale_conv1)  # (B, N, 4, C / 4)
        first = decoder.activation(F.layer_norm(first, norm.normalized_shape, norm.weight, norm.bias, norm.eps))
        second = decoder.activation(_subpixel_linear(first.flatten(1, 2), decoder.upscale_conv2))  # (B, 4N, 4, C / 8)
        masks = second.flatten(1, 2) @ hyper.transpose(1, 2)  # (B, 16N, 3)
        # pixel (4i + 2a + a2, 4j + 2b + b2) of mask m sits at [i, j, a, b, a2, b2, m]
        masks = masks.view(batch, side, side, 2, 2, 2, 2, -1).permute(0, 7, 1, 3, 5, 2, 4, 6)
        return masks.reshape(batch, -1, 4 * side, 4 * side)


def _tokens(maps: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H * W, C)."""
    return maps.flatten(2).transpose(1, 2)


def _batch_size(*prompts: torch.Tensor | None) -> int:
    return next(prompt.shape[0] for prompt in prompts if prompt is not None)


def _heads(attention: SamAttention) -> tuple[int, int]:
    heads = attention.num_attention_heads
    return heads, attention.internal_dim // heads


def _self_attention(attention: SamAttention, query: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """The prompt tokens' self-attention (query = key), (B, T, C)."""
    return attention(query=query[:, None], key=query[:, None], value=value[:, None])[0][:, 0]


def _tokens_to_image(
    attention: SamAttention, queries: torch.Tensor, keys_pe: torch.Tensor, keys: torch.Tensor
) -> torch.Tensor:
    """Tokens (B, T, C) attending to the image tokens (B, N, C), keys_pe = keys + positional: (B, T, C)."""
    heads, width = _heads(attention)
    batch, count, channels = queries.shape
    query = attention.q_proj(queries).view(batch, count, heads, width) * attention.scaling
    project = torch.einsum("bthd,hdc->bhtc", query, attention.k_proj.weight.view(heads, width, channels))
    scores = torch.bmm(project.reshape(batch, heads * count, channels), keys_pe.transpose(1, 2))  # (B, hT, N)
    mixed = torch.bmm(scores.softmax(dim=-1), keys).view(batch, heads, count, channels)
    values = torch.einsum("bhtc,hdc->bthd", mixed, attention.v_proj.weight.view(heads, width, channels))
    return attention.out_proj(values.reshape(batch, count, heads * width) + attention.v_proj.bias)


def _image_to_tokens(
    attention: SamAttention, keys_pe: torch.Tensor, queries: torch.Tensor, values: torch.Tensor, keys: torch.Tensor
) -> torch.Tensor:
    """keys + the image tokens (keys_pe, B x N x C) attending to the prompt tokens (B, T, C): (B, N, C).

    Scores are laid out (B, heads * T, N) so that the softmax over the few tokens runs along a
    contiguous axis of N; the output bias is spread over the tokens' values (each head's weights
    sum to one), so nothing is added to the (B, N, C) result afterwards.
    """
    heads, width = _heads(attention)
    batch, count, channels = queries.shape
    key = attention.k_proj(queries).view(batch, count, heads, width) * attention.scaling
    value = attention.v_proj(values).view(batch, count, heads, width)
    project = torch.einsum("hdc,bthd->bhtc", attention.q_proj.weight.view(heads, width, channels), key)
    offset = torch.einsum("hd,bthd->bht", attention.q_proj.bias.view(heads, width), key)
    scores = torch.baddbmm(
        offset.reshape(batch, heads * count, 1),
        project.reshape(batch, heads * count, channels),
        keys_pe.transpose(1, 2),
    )
    weights = scores.view(batch, heads, count, -1).softmax(dim=2).view(batch, heads * count, -1)
    mix = torch.einsum("chd,bthd->bhtc", attention.out_proj.weight.view(channels, heads, width), value)
    mix = mix + attention.out_proj.bias / heads
    return torch.baddbmm(keys, weights.transpose(1, 2), mix.reshape(batch, heads * count, channels))


def _subpixel_linear(pixels: torch.Tensor, convolution: torch.nn.ConvTranspose2d) -> torch.Tensor:
    """A 2x2, stride-2 transposed convolution on (B, P, C_in) pixels: (B, P, 4, C_out), the four
    output pixels of each input pixel in (row, column) order."""
    weight = convolution.weight  # (C_in, C_out, 2, 2)
    channels_out = weight.shape[1]
    flat = weight.permute(0, 2, 3, 1).reshape(weight.shape[0], 4 * channels_out)
    out = torch.addmm(convolution.bias.repeat(4), pixels.reshape(-1, pixels.shape[-1]), flat)
    return out.view(*pixels.shape[:2], 4, channels_out)
