"""TinyViT, the image encoder of MobileSAM and LiteMedSAM, in plain torch (inference only).

Module and parameter names follow the official `tiny_vit_sam.py` (MobileSAM's and LiteMedSAM's
copies), so an official `image_encoder.*` state dict loads without renaming. What it computes:

- patch embedding: two Conv2d+BatchNorm with a GELU between; 3x3 stride 2 in MobileSAM (1024 input,
  /4), 1x1 stride 1 in LiteMedSAM (256 input, /1): both give a 256 x 256 grid;
- stage 0: MBConv blocks (1x1 expand, 3x3 depthwise, 1x1 project, residual, GELU);
- stages 1..: TinyViT blocks (windowed attention with a learned bias per head and (|dy|, |dx|)
  offset, residual; 3x3 depthwise Conv2d+BN; residual MLP), windows zero-padded at the borders;
- between stages PatchMerging (1x1, 3x3 depthwise, 1x1); its 3x3 has stride 2 except, by the official
  rule, stride 1 when it outputs 320, 448 or 576 channels (the last stage of every released model);
- neck: 1x1 conv, channel LayerNorm, 3x3 conv, channel LayerNorm -> (B, 256, 64, 64).

BatchNorm is the eval-mode transform with the stored running statistics (eps 1e-5); the official
`num_batches_tracked` counters and the unused classifier head are not part of this module.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# PatchMerging outputs with these widths keep the resolution (official TinyViT rule).
STRIDE_ONE_WIDTHS = (320, 448, 576)
BATCHNORM_EPS = 1e-5


@dataclass(frozen=True)
class TinyViTShape:
    """Hyper-parameters of a TinyViT encoder (as read from a state dict by `convert_tiny_vit`)."""

    embed_dims: tuple[int, ...]
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]  # stage 0 (convolutional) has none: 0
    window_sizes: tuple[int, ...]  # stage 0: 0
    patch_kernel: int  # 3: MobileSAM (two 3x3 stride-2 convs), 1: LiteMedSAM (two 1x1 stride-1 convs)
    mlp_ratio: float = 4.0
    expand_ratio: float = 4.0
    local_conv_size: int = 3
    out_chans: int = 256

    @property
    def merge_strides(self) -> tuple[int, ...]:
        """Stride of each PatchMerging (one fewer than stages)."""
        return tuple(1 if width in STRIDE_ONE_WIDTHS else 2 for width in self.embed_dims[1:])

    @property
    def total_stride(self) -> int:
        """Input pixels per embedding cell along one side (16 for MobileSAM, 4 for LiteMedSAM)."""
        stride = 4 if self.patch_kernel == 3 else 1
        for merge in self.merge_strides:
            stride *= merge
        return stride


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d's parameters and running statistics (applied in eval mode, folded into `Conv2dBN`)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))


class Conv2dBN(nn.Module):
    """Bias-free Conv2d `c` followed by BatchNorm `bn` (the official Conv2d_BN), computed as one
    convolution with the BatchNorm folded into its weight and bias (one pass over the activations)."""

    def __init__(self, in_chans: int, out_chans: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.c = nn.Conv2d(in_chans, out_chans, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = FrozenBatchNorm2d(out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn = self.bn
        scale = bn.weight * torch.rsqrt(bn.running_var + BATCHNORM_EPS)
        weight = self.c.weight * scale[:, None, None, None]
        bias = bn.bias - bn.running_mean * scale
        return F.conv2d(x, weight, bias, self.c.stride, self.c.padding, groups=self.c.groups)


class PatchEmbed(nn.Module):
    """Two Conv2dBN with a GELU between (`seq.0`, `seq.2`); stride 2 each for 3x3 kernels."""

    def __init__(self, embed_dim: int, kernel: int) -> None:
        super().__init__()
        stride = 2 if kernel == 3 else 1
        self.seq = nn.Sequential(
            Conv2dBN(3, embed_dim // 2, kernel, stride), nn.GELU(), Conv2dBN(embed_dim // 2, embed_dim, kernel, stride)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block of stage 0, on (B, C, H, W)."""

    def __init__(self, dim: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = Conv2dBN(dim, hidden)
        self.conv2 = Conv2dBN(hidden, hidden, 3, groups=hidden)
        self.conv3 = Conv2dBN(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.gelu(self.conv2(F.gelu(self.conv1(x))))
        return F.gelu(self.conv3(hidden) + x)


class PatchMerging(nn.Module):
    """(B, C, H, W) -> (B, C', H / stride, W / stride)."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        stride = 1 if out_dim in STRIDE_ONE_WIDTHS else 2
        self.conv1 = Conv2dBN(dim, out_dim)
        self.conv2 = Conv2dBN(out_dim, out_dim, 3, stride, groups=out_dim)
        self.conv3 = Conv2dBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x)))))


@functools.cache
def bias_index(window: int) -> torch.Tensor:
    """(w*w, w*w) index of each query/key pair's (|dy|, |dx|) offset, numbered in first-seen order."""
    cells = [(row, col) for row in range(window) for col in range(window)]
    offsets: dict[tuple[int, int], int] = {}
    index = [offsets.setdefault((abs(r1 - r2), abs(c1 - c2)), len(offsets)) for r1, c1 in cells for r2, c2 in cells]
    return torch.tensor(index, dtype=torch.long).view(len(cells), len(cells))


class Attention(nn.Module):
    """Multi-head self-attention within a window, with TinyViT's learned relative-offset bias."""

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window = window
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) window tokens -> (B, N, C)."""
        batch, tokens, channels = x.shape
        head_dim = channels // self.num_heads
        # per head: query, key, value side by side (the official view-then-split layout)
        qkv = self.qkv(self.norm(x)).view(batch, tokens, self.num_heads, 3 * head_dim).transpose(1, 2)
        query, key, value = qkv.split(head_dim, dim=3)
        bias = self.attention_biases[:, bias_index(self.window).to(x.device)].to(query.dtype)
        scores = torch.baddbmm(
            bias.expand(batch, -1, -1, -1).reshape(-1, tokens, tokens),
            query.reshape(-1, tokens, head_dim),
            key.reshape(-1, tokens, head_dim).transpose(1, 2),
            alpha=head_dim**-0.5,
        )
        out = torch.bmm(scores.softmax(dim=-1), value.reshape(-1, tokens, head_dim)).view(batch, -1, tokens, head_dim)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, channels))


class Mlp(nn.Module):
    """LayerNorm, Linear, GELU, Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Windowed attention, depthwise local convolution, MLP; on (B, H, W, C)."""

    def __init__(self, dim: int, num_heads: int, window: int, mlp_ratio: float, local_conv_size: int) -> None:
        super().__init__()
        self.window = window
        self.attn = Attention(dim, num_heads, window)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = Conv2dBN(dim, dim, local_conv_size, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, channels = x.shape
        size = self.window
        pad_h, pad_w = (-height) % size, (-width) % size
        padded = F.pad(x, (0, 0, 0, pad_w, 0, pad_h)) if pad_h or pad_w else x
        rows, cols = (height + pad_h) // size, (width + pad_w) // size
        windows = padded.view(batch, rows, size, cols, size, channels).transpose(2, 3)
        attended = self.attn(windows.reshape(-1, size * size, channels))
        attended = attended.view(batch, rows, cols, size, size, channels).transpose(2, 3)
        attended = attended.reshape(batch, rows * size, cols * size, channels)[:, :height, :width]
        x = x + attended
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.mlp(x)


class ConvLayer(nn.Module):
    """Stage 0: MBConv blocks, then PatchMerging into stage 1."""

    def __init__(self, dim: int, depth: int, expand_ratio: float, out_dim: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = PatchMerging(dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x)


class BasicLayer(nn.Module):
    """Stages 1..: TinyViT blocks on (B, H, W, C), then PatchMerging unless it is the last stage."""

    def __init__(self, dim: int, depth: int, num_heads: int, window: int, shape: TinyViTShape, out_dim: int | None):
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, num_heads, window, shape.mlp_ratio, shape.local_conv_size) for _ in range(depth)
        )
        self.downsample = PatchMerging(dim, out_dim) if out_dim is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C', H', W')."""
        x = x.permute(0, 2, 3, 1)
        for block in self.blocks:
            x = block(x)
        x = x.permute(0, 3, 1, 2)
        return self.downsample(x) if self.downsample is not None else x


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of (B, C, H, W), eps 1e-6 (SAM's neck)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        return self.weight[:, None, None] * ((x - mean) / torch.sqrt(var + 1e-6)) + self.bias[:, None, None]


class TinyViT(nn.Module):
    """The TinyViT image encoder: (B, 3, S, S) normalised pixels -> (B, 256, S / stride, S / stride)."""

    def __init__(self, shape: TinyViTShape) -> None:
        super().__init__()
        self.shape = shape
        dims = shape.embed_dims
        self.patch_embed = PatchEmbed(dims[0], shape.patch_kernel)
        layers: list[nn.Module] = [ConvLayer(dims[0], shape.depths[0], shape.expand_ratio, dims[1])]
        for stage in range(1, len(dims)):
            out_dim = dims[stage + 1] if stage + 1 < len(dims) else None
            layers.append(
                BasicLayer(
                    dims[stage], shape.depths[stage], shape.num_heads[stage], shape.window_sizes[stage], shape, out_dim
                )
            )
        self.layers = nn.ModuleList(layers)
        self.neck = nn.Sequential(
            nn.Conv2d(dims[-1], shape.out_chans, 1, bias=False),
            LayerNorm2d(shape.out_chans),
            nn.Conv2d(shape.out_chans, shape.out_chans, 3, padding=1, bias=False),
            LayerNorm2d(shape.out_chans),
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        # channels-last throughout: the convolutions' native layout on CPU, and (B, C, H, W) views of
        # the blocks' (B, H, W, C) tokens need no copy
        x = self.patch_embed(pixels.contiguous(memory_format=torch.channels_last))
        for layer in self.layers:
            x = layer(x)
        return self.neck(x)
