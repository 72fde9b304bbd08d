"""RD4AD networks sized to any 3-level teacher: the OCBE bottleneck and the student decoder.

Follows hq-deng/RD4AD (``resnet.py``: ``BN_layer``, ``de_resnet.py``) with channel counts taken
from the teacher instead of fixed to WideResNet-50: for teacher channels (c1, c2, c3) at strides
(4, 8, 16), the OCBE brings level 1 down with two stride-2 conv3x3+BN+ReLU and level 2 with one,
concatenates them with level 3 (3*c3 channels at stride 16) and runs one residual stage of
bottleneck blocks with stride 2 to a (2*c3)-channel code at stride 32 (WRN-50: 3072 -> 2048@8x8).
The decoder mirrors the teacher: stages of bottleneck blocks upsampled by 2x2 transposed
convolutions, producing (c3, c2, c1) maps at strides (16, 8, 4). Bottleneck widths are half a
block's output channels, as in a wide ResNet (width 2x planes, output 4x planes).
"""

from __future__ import annotations

import torch
from torch import nn

from distilad.modules.scoring import ScoringNet


def conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class Bottleneck(nn.Module):
    """ResNet bottleneck; ``up=True`` makes it the decoder's upsampling variant (deconv 2x2 s2)."""

    def __init__(self, cin: int, cout: int, width: int, stride: int = 1, up: bool = False,
                 final_relu: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        if stride == 2 and up:
            self.conv2 = nn.ConvTranspose2d(width, width, 2, 2, bias=False)
        else:
            self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.final_relu = final_relu
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            conv: nn.Module = (nn.ConvTranspose2d(cin, cout, 2, 2, bias=False) if up and stride == 2
                               else nn.Conv2d(cin, cout, 1, stride, bias=False))
            self.shortcut = nn.Sequential(conv, nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out)) + self.shortcut(x)
        return self.relu(out) if self.final_relu else out


def make_stage(cin: int, cout: int, blocks: int, stride: int, up: bool, last_relu: bool
               ) -> nn.Sequential:
    width = max(cout // 2, 8)
    layers = [Bottleneck(cin, cout, width, stride, up,
                         final_relu=last_relu or blocks > 1)]
    for b in range(1, blocks):
        layers.append(Bottleneck(cout, cout, width, 1, up, final_relu=last_relu or b < blocks - 1))
    return nn.Sequential(*layers)


class OCBE(nn.Module):
    """One-class bottleneck embedding: multi-scale fusion + one residual stage.

    Input: teacher maps [(B, c1, H/4), (B, c2, H/8), (B, c3, H/16)]; output (B, 2*c3, H/32).
    """

    def __init__(self, channels: tuple[int, int, int], blocks: int = 3):
        super().__init__()
        c1, c2, c3 = channels
        self.down1 = nn.Sequential(conv_bn_relu(c1, c2, 2), conv_bn_relu(c2, c3, 2))
        self.down2 = conv_bn_relu(c2, c3, 2)
        self.stage = make_stage(3 * c3, 2 * c3, blocks, stride=2, up=False, last_relu=True)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        fused = torch.cat([self.down1(feats[0]), self.down2(feats[1]), feats[2]], dim=1)
        return self.stage(fused)


class Decoder(nn.Module):
    """Student decoder: code (B, 2*c3, H/32) -> [(B, c1, H/4), (B, c2, H/8), (B, c3, H/16)].

    ``signed_features=True`` (teachers whose taps are not ReLU outputs, e.g. EfficientNet's
    linear projections) drops the ReLU after each stage's last block so negative values can be
    restored.
    """

    def __init__(self, channels: tuple[int, int, int], blocks: tuple[int, int, int] = (3, 4, 6),
                 signed_features: bool = False):
        super().__init__()
        c1, c2, c3 = channels
        last_relu = not signed_features
        self.stage3 = make_stage(2 * c3, c3, blocks[0], 2, up=True, last_relu=last_relu)
        self.stage2 = make_stage(c3, c2, blocks[1], 2, up=True, last_relu=last_relu)
        self.stage1 = make_stage(c2, c1, blocks[2], 2, up=True, last_relu=last_relu)

    def forward(self, code: torch.Tensor) -> list[torch.Tensor]:
        f3 = self.stage3(code)
        f2 = self.stage2(f3)
        f1 = self.stage1(f2)
        return [f1, f2, f3]


class Student(nn.Module):
    """OCBE + decoder: everything RD trains."""

    def __init__(self, channels: tuple[int, int, int], ocbe_blocks: int = 3,
                 decoder_blocks: tuple[int, int, int] = (3, 4, 6), signed_features: bool = False):
        super().__init__()
        self.bottleneck = OCBE(channels, ocbe_blocks)
        self.decoder = Decoder(channels, decoder_blocks, signed_features)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.decoder(self.bottleneck(feats))


def rd_loss(teacher: list[torch.Tensor], student: list[torch.Tensor]) -> torch.Tensor:
    """Official RD4AD loss: sum over scales of mean over the batch of 1 - cosine of each sample's
    flattened feature map (hq-deng/RD4AD ``loss_fucntion``)."""
    loss = teacher[0].new_zeros(())
    for t, s in zip(teacher, student, strict=True):
        cos = nn.functional.cosine_similarity(t.flatten(1), s.flatten(1), dim=1)
        loss = loss + (1 - cos).mean()
    return loss


def anomaly_map(teacher: list[torch.Tensor], student: list[torch.Tensor], size: int,
                sigma: float = 4.0) -> torch.Tensor:
    """Per-pixel 1 - cosine at each scale, bilinearly upsampled to ``size`` (align_corners) and
    summed, then a Gaussian blur (sigma in pixels of the ``size`` grid; :func:`gaussian_blur`).
    Returns (B, size, size).

    Upsampling and the blur are linear and act on rows and columns apart, so each scale's whole
    path is two matrix products: ``P_h @ m @ P_w^T`` with ``P = blur @ upsample`` of shape
    (size, h) (:func:`map_operator`). Same result as interpolate + sum + blur to float rounding
    (tested), in a tenth of the time at batch 1 on a CPU: 4 small matrix products per scale
    instead of a 256 x 256 interpolation per scale and two 33-tap convolutions."""
    total = None
    for t, s in zip(teacher, student, strict=True):
        m = upsample_blur(1 - channel_cosine(t, s), size, sigma)
        total = m if total is None else total + m
    assert total is not None
    return total


def upsample_blur(m: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """(B, h, w) map -> (B, size, size): bilinear upsampling (align_corners) then
    :func:`gaussian_blur`, as the two matrix products ``P_h @ m @ P_w^T`` of
    :func:`map_operator`."""
    p_h = map_operator(m.shape[-2], size, sigma, m.dtype, m.device)
    p_w = p_h if m.shape[-1] == m.shape[-2] else map_operator(m.shape[-1], size, sigma,
                                                              m.dtype, m.device)
    return p_h @ m @ p_w.T


def channel_cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarity of (B, C, h, w) feature maps along C, (B, h, w): ``a.b / max(|a| |b|,
    eps)``, as ``F.cosine_similarity`` computes it (to float rounding), written out because
    that function took ~10x longer on CPU for such maps (it normalises in several passes)."""
    dot = (a * b).sum(1)
    norms = ((a * a).sum(1) * (b * b).sum(1)).clamp_min(eps * eps).sqrt()
    return dot / norms


_OPERATORS: dict[tuple, torch.Tensor] = {}


def map_operator(n: int, size: int, sigma: float, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """The linear map of one axis of length ``n`` to the blurred, upsampled axis of length
    ``size``: ``blur (size, size) @ upsample (size, n)``, as (size, n). Upsampling is bilinear
    with align_corners=True (``F.interpolate``'s weights); the blur is :func:`gaussian_blur`'s
    (reflect padding). Built in float64 once per (n, size, sigma, dtype, device) and cached."""
    key = (n, size, float(sigma), dtype, str(device))
    op = _OPERATORS.get(key)
    if op is None:
        eye = torch.eye(n, dtype=torch.float64)[:, None]  # (n, 1, n): each column's response
        up = nn.functional.interpolate(eye, size=size, mode="linear", align_corners=True)
        up = up[:, 0].T  # (size, n)
        blurred = gaussian_blur(up.T[:, None, None, :], sigma)[:, 0, 0].T  # blur along size
        op = blurred.to(dtype=dtype, device=device).contiguous()
        if len(_OPERATORS) > 64:
            _OPERATORS.clear()
        _OPERATORS[key] = op
    return op


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, 1, H, W), radius 4 sigma, reflect padding (as scipy's
    ``gaussian_filter`` with its default ``truncate=4`` and ``mode='reflect'``), for any radius:
    one wider than the map reflects again, as scipy does. Returns (B, 1, H, W)."""
    if sigma <= 0:
        return x
    radius = int(4.0 * sigma + 0.5)
    k = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (k / sigma) ** 2)
    k = k / k.sum()
    x = x.index_select(-2, _reflect_index(x.shape[-2], radius, x.device))
    x = x.index_select(-1, _reflect_index(x.shape[-1], radius, x.device))
    x = nn.functional.conv2d(x, k.view(1, 1, 1, -1))
    x = nn.functional.conv2d(x, k.view(1, 1, -1, 1))
    return x


def _reflect_index(n: int, r: int, device: torch.device) -> torch.Tensor:
    """Indices of a length-``n`` axis padded by ``r`` on both sides in scipy's 'reflect' mode
    (d c b a | a b c d | d c b a), which is periodic with period 2n: (n + 2r,) int64."""
    i = torch.remainder(torch.arange(-r, n + r, device=device), 2 * n)
    return torch.where(i < n, i, 2 * n - 1 - i)


class RDScoringNet(ScoringNet):
    """RD's scoring path in one module (for ONNX export): teacher -> student -> :func:`anomaly_map`
    -> image score (max or mean of the map), as ``ReverseDistillation._score`` computes them;
    with ``surface`` (a :class:`distilad.methods.rd.surface.SurfaceHead`) the map is that head's.
    Input (N, 3, S, S) in [0, 1]; returns (scores (N,), maps (N, S, S))."""

    def __init__(self, teacher: nn.Module, student: Student, image_size: int, sigma: float,
                 image_score: str, surface: nn.Module | None = None):
        super().__init__(image_size, channels=3, has_maps=True)
        self.teacher = teacher
        self.student = student
        self.sigma = float(sigma)
        self.image_score = image_score
        self.surface = surface

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.teacher(x)
        if self.surface is None:
            amap = anomaly_map(t, self.student(t), self.image_size, self.sigma)
        else:
            amap = self.surface(t, self.student)
        flat = amap.flatten(1)
        scores = flat.amax(1) if self.image_score == "max" else flat.mean(1)
        return scores, amap
