"""A small U-Net, trained from scratch: the shared backbone shape of the project's methods.

Buildings span 13 to 200 px at 0.3 m, so the encoder goes down to stride 32 (a receptive field
wider than the largest building) and the decoder comes back up to the method's output stride with
skip connections, which keeps small buildings and sharp centres resolvable.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval


def conv_block(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution, batch norm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """Fold each batch norm that follows a convolution in a Sequential (``conv_block``'s layout)
    into that convolution, in place: for inference only, as the batch norms' statistics become
    fixed weights. Outputs stay the same to rounding, and every activation is passed over once
    less: 0 to 20% faster in benchmarks/README.md's runs.

    Returns:
        The model, in eval mode.
    """
    model.eval()
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for i in range(len(module) - 1):
            conv, norm = module[i], module[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                module[i] = fuse_conv_bn_eval(conv, norm)
                module[i + 1] = nn.Identity()
    return model


class UNet(nn.Module):
    """Encoder to stride 32, decoder back to ``out_stride``; output has ``out_channels`` features.

    The stem strides by 2 at once. Methods that label every pixel (the embedding methods) ask for
    stride 1, which adds a full-resolution stage of ``width`` channels as the last skip; those
    that do not (Vec2Instance reads its crops from the image itself) skip it, as it would cost as
    much as all the other stages together.

    Args:
        in_channels: Input bands.
        width: Channels of the first stage; later stages widen to at most 6 x width.
        out_stride: Stride of the output map: 1, 2, 4 or 8.
        context: Add image-wide context at stride 32 (see ``PyramidPooling``): for segments that
            can be wider than the encoder's receptive field (about 190 px).
    """

    multiple = 32

    def __init__(
        self, in_channels: int = 3, width: int = 16, out_stride: int = 2, context: bool = False
    ) -> None:
        super().__init__()
        if out_stride not in (1, 2, 4, 8):
            raise ValueError(f"out_stride must be 1, 2, 4 or 8, not {out_stride}")
        widths = [width, 2 * width, 4 * width, 6 * width, 6 * width]  # strides 2..32
        self.full = conv_block(in_channels, width) if out_stride == 1 else None
        self.stem = nn.Sequential(
            conv_block(in_channels, widths[0], stride=2), conv_block(widths[0], widths[0])
        )
        self.down = nn.ModuleList(
            nn.Sequential(
                conv_block(widths[i], widths[i + 1], stride=2), conv_block(widths[i + 1], widths[i + 1])
            )
            for i in range(len(widths) - 1)
        )
        self.context = PyramidPooling(widths[-1], width) if context else None
        levels = {1: 0, 2: 0, 4: 1, 8: 2}[out_stride]
        up = [
            conv_block(widths[i + 1] + widths[i], widths[i]) for i in range(len(widths) - 2, levels - 1, -1)
        ]
        if self.full is not None:
            up.append(conv_block(widths[0] + width, width))
        self.up = nn.ModuleList(up)
        self.out_channels = width if self.full is not None else widths[levels]
        self.out_stride = out_stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, bands, rows, cols) with sides multiple of 32 -> (batch, out_channels, rows/s, cols/s)."""
        return self.from_stem(self.stem(x), None if self.full is None else self.full(x))

    def from_stem(self, stem: torch.Tensor, full: torch.Tensor | None = None) -> torch.Tensor:
        """The rest of the network from the stem's features (stride 2), which a caller may have
        changed (the pointer network weighs them by its attention maps); ``full`` is the
        full-resolution stage's output where the network has one."""
        skips = [] if full is None else [full]
        skips.append(stem)
        for stage in self.down:
            skips.append(stage(skips[-1]))
        y = skips.pop()
        if self.context is not None:
            y = self.context(y)
        for block in self.up:
            skip = skips.pop()
            y = block(torch.cat([F.interpolate(y, size=skip.shape[-2:], mode="nearest"), skip], dim=1))
        return y


class PyramidPooling(nn.Module):
    """Image-wide context for every position, as in PSPNet: the features averaged over 1 x 1,
    2 x 2 and 4 x 4 bins, each bin's average reduced by a 1x1 convolution, spread back over its
    bin and fused with the features.

    What a position sees depends on the image's extent, so train on chips of the extent the
    network will see: a pointer network trained without augmentation on 224 px crops of the
    COCO sample scored single-segment IoU 0.55 on such crops and 0.13 on the whole images.
    Windows of fixed size instead (3 to 9 positions) do not depend on the extent, but they lose
    what makes the pooling pay for a pointer network: the pointed segment's look, spread over the
    whole image (IoU 0.05 after 1,000 steps against 0.39 for the bins).

    Args:
        channels: Channels in and out.
        reduced: Channels of each pooled branch.
    """

    bins = (1, 2, 4)

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        # No batch norm on the branches: a 1 x 1 average has one value per image and channel.
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, reduced, 1), nn.ReLU(inplace=True)) for _ in self.bins
        )
        self.fuse = conv_block(channels + reduced * len(self.bins), channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, channels, rows, cols) -> the same shape."""
        pooled = [
            F.interpolate(branch(F.adaptive_avg_pool2d(x, size)), size=x.shape[-2:], mode="nearest")
            for size, branch in zip(self.bins, self.branches, strict=True)
        ]
        return self.fuse(torch.cat([x, *pooled], dim=1))
