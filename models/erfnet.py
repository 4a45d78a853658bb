"""ERFNet (Romera et al. 2018) with one shared encoder and several decoders ("branched").

The encoder halves the resolution three times (output stride 8) with downsampler blocks (a strided
3x3 convolution concatenated with a max-pool) and models context with factorised residual blocks
(3x1 then 1x3 convolutions), the deeper ones dilated up to 16 for a wide receptive field at little
cost. Each decoder upsamples back to full resolution with transposed convolutions.

Channel widths scale with ``width`` (16 is the paper's: 16, 64, 128 in the encoder).
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn
from torch.nn import functional as F


class Downsampler(nn.Module):
    """Half resolution: a strided 3x3 convolution beside a 2x2 max-pool of the input."""

    def __init__(self, channels_in: int, channels_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels_in, channels_out - channels_in, 3, stride=2, padding=1, bias=True)
        self.pool = nn.MaxPool2d(2, stride=2)
        self.norm = nn.BatchNorm2d(channels_out, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, in, h, w) -> (b, out, h / 2, w / 2); h and w even."""
        return F.relu(self.norm(torch.cat([self.conv(x), self.pool(x)], dim=1)))


class Factorised(nn.Module):
    """A residual block of two factorised 3x3 convolutions, the second pair dilated."""

    def __init__(self, channels: int, dropout: float, dilation: int) -> None:
        super().__init__()
        d = dilation
        self.conv1 = nn.Conv2d(channels, channels, (3, 1), padding=(1, 0))
        self.conv2 = nn.Conv2d(channels, channels, (1, 3), padding=(0, 1))
        self.norm1 = nn.BatchNorm2d(channels, eps=1e-3)
        self.conv3 = nn.Conv2d(channels, channels, (3, 1), padding=(d, 0), dilation=(d, 1))
        self.conv4 = nn.Conv2d(channels, channels, (1, 3), padding=(0, d), dilation=(1, d))
        self.norm2 = nn.BatchNorm2d(channels, eps=1e-3)
        self.dropout = nn.Dropout2d(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same shape in and out."""
        y = F.relu(self.conv1(x))
        y = F.relu(self.norm1(self.conv2(y)))
        y = F.relu(self.conv3(y))
        y = self.dropout(self.norm2(self.conv4(y)))
        return F.relu(y + x)


class Upsampler(nn.Module):
    """Double resolution with a 3x3 transposed convolution."""

    def __init__(self, channels_in: int, channels_out: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(channels_in, channels_out, 3, stride=2, padding=1, output_padding=1)
        self.norm = nn.BatchNorm2d(channels_out, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, in, h, w) -> (b, out, 2h, 2w)."""
        return F.relu(self.norm(self.conv(x)))


class Encoder(nn.Module):
    """Image -> features at stride 8 with ``8 * width`` channels."""

    def __init__(self, width: int = 16, dropout: float = 0.3) -> None:
        super().__init__()
        w1, w2, w3 = width, 4 * width, 8 * width
        layers: list[nn.Module] = [Downsampler(3, w1), Downsampler(w1, w2)]
        layers += [Factorised(w2, dropout / 10, 1) for _ in range(5)]
        layers.append(Downsampler(w2, w3))
        layers += [Factorised(w3, dropout, d) for _ in range(2) for d in (2, 4, 8, 16)]
        self.layers = nn.Sequential(*layers)
        self.channels = w3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, 3, h, w) -> (b, 8 * width, h / 8, w / 8); h and w multiples of 8."""
        return self.layers(x)


class Decoder(nn.Module):
    """Encoder features -> ``channels_out`` maps at full resolution."""

    def __init__(self, width: int, channels_out: int) -> None:
        super().__init__()
        w1, w2, w3 = width, 4 * width, 8 * width
        self.layers = nn.Sequential(
            Upsampler(w3, w2),
            Factorised(w2, 0.0, 1),
            Factorised(w2, 0.0, 1),
            Upsampler(w2, w1),
            Factorised(w1, 0.0, 1),
            Factorised(w1, 0.0, 1),
        )
        self.output = nn.ConvTranspose2d(w1, channels_out, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, 8 * width, h / 8, w / 8) -> (b, channels_out, h, w)."""
        return self.output(self.layers(x))


class BranchedERFNet(nn.Module):
    """One encoder, one decoder per entry of ``outputs`` (its number of channels).

    Args:
        outputs: Channels of each decoder's output.
        width: Channels of the first stage (16 in the paper).
        dropout: Dropout of the dilated blocks (a tenth of it in the first stage's blocks).
    """

    multiple = 8  # inputs must have sides that are multiples of this

    def __init__(self, outputs: tuple[int, ...], width: int = 16, dropout: float = 0.3) -> None:
        super().__init__()
        self.encoder = Encoder(width, dropout)
        self.decoders = nn.ModuleList(Decoder(width, n) for n in outputs)

    def head(self, index: int) -> nn.ConvTranspose2d:
        """The output layer of a decoder."""
        return cast(Decoder, self.decoders[index]).output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, 3, h, w) -> (b, sum(outputs), h, w): the decoders' outputs, concatenated."""
        features = self.encoder(x)
        return torch.cat([decoder(features) for decoder in self.decoders], dim=1)
