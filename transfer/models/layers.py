"""The paper's building blocks as small modules with no knowledge of training.

Each layer is named after the part of arXiv 2001.06268 it implements; numbers cite the paper's tables.
Schedules (DropBlock's keep_prob) are set from outside through `set_keep_prob`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int = 1, *, dilation: int = 1,
            relu: bool = True, bn: dict | None = None) -> nn.Sequential:
    """Bias-free conv -> BN [-> ReLU], 'same' padding for odd kernels."""
    pad = dilation * (kernel - 1) // 2
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_ch, **(bn or {})),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BlurPool(nn.Module):
    """Anti-aliased downsampling (Zhang 2019; the paper's Table 3, row A4).

    The binomial filter [1,2,1]x[1,2,1]/16 with reflect padding, applied per channel (depthwise), stride 2.
    As a depthwise convolution it runs 2-12x faster on CPU than the same filter written as two average pools
    (measured in benchmarks/backbones.py), and autocast and channels_last apply to it like to any conv.
    """

    def __init__(self, channels: int, stride: int = 2):
        super().__init__()
        if stride != 2:
            raise ValueError(f"BlurPool supports stride 2 only, got {stride}")
        self.channels = channels
        self.stride = stride
        # A constant, not a parameter: kept out of the state_dict so weights files carry only what is learnt.
        self.register_buffer("weight", self.filter().expand(channels, 1, 3, 3).contiguous(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        return F.conv2d(x, self.weight.to(x.dtype), stride=self.stride, groups=self.channels)

    @staticmethod
    def filter() -> torch.Tensor:
        """The 3x3 binomial filter itself."""
        f = torch.tensor([1.0, 2.0, 1.0])
        return torch.outer(f, f) / 16.0

    def extra_repr(self) -> str:
        return f"channels={self.channels}, filter=binomial3, stride={self.stride}"


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation (Hu 2018), r=16 as in rows E4/E5: GAP -> 1x1 -> ReLU -> 1x1 -> sigmoid."""

    def __init__(self, channels: int, reduction: int = 16, bias: bool = False):
        super().__init__()
        hidden = max(channels // reduction, 1)
        # The official SE convs are bias-free; timm's (seresnet50) carry biases.
        self.reduce = nn.Conv2d(channels, hidden, 1, bias=bias)
        self.expand = nn.Conv2d(hidden, channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.expand(F.relu(self.reduce(s), inplace=True))
        return x * torch.sigmoid(s)


class SelectiveKernel(nn.Module):
    """Selective Kernel convolution (Li 2019) in the two forms of the paper's Table 2.

    kind="sk_dagger" (row C3, the one the final model uses): a single 3x3 conv to 2C channels -> BN -> ReLU,
    split into two paths of C channels. kind="sk" (row C2): a 3x3 path and a dilated 3x3 path (the 5x5
    receptive field at 3x3 cost), each conv -> BN -> ReLU. Fuse: sum -> GAP -> 1x1 conv to
    d = max(C / reduction, min_dim) -> BN -> ReLU -> 1x1 conv to 2C -> softmax over the two paths, per
    channel -> weighted sum of the paths.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, *, kind: str = "sk_dagger",
                 reduction: int = 2, min_dim: int = 32, bn: dict | None = None):
        super().__init__()
        if kind not in ("sk", "sk_dagger"):
            raise ValueError(f"SelectiveKernel kind must be 'sk' or 'sk_dagger', got {kind!r}")
        self.kind = kind
        self.out_ch = out_ch
        if kind == "sk_dagger":
            self.paths = nn.ModuleList([conv_bn(in_ch, 2 * out_ch, 3, stride, bn=bn)])
        else:
            self.paths = nn.ModuleList([
                conv_bn(in_ch, out_ch, 3, stride, bn=bn),
                conv_bn(in_ch, out_ch, 3, stride, dilation=2, bn=bn),
            ])
        hidden = max(out_ch // reduction, min_dim)
        self.fuse = conv_bn(out_ch, hidden, 1, bn=bn)
        self.select = nn.Conv2d(hidden, 2 * out_ch, 1, bias=False)

    def _paths(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "sk_dagger":
            return self.paths[0](x).chunk(2, dim=1)
        return self.paths[0](x), self.paths[1](x)

    def _weights(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # GAP of the sum = sum of the GAPs: reduce each path once, never materialise a + b.
        u = a.mean((2, 3), keepdim=True) + b.mean((2, 3), keepdim=True)
        logits = self.select(self.fuse(u))
        return logits.view(logits.shape[0], 2, self.out_ch, 1, 1).softmax(dim=1)

    def attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two paths stacked (N, 2, C, H, W) and their per-channel weights (N, 2, C, 1, 1)."""
        a, b = self._paths(x)
        return torch.stack([a, b], dim=1), self._weights(a, b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self._paths(x)
        w = self._weights(a, b)
        # Two-way softmax: w0 + w1 = 1, so a*w0 + b*w1 = b + (a - b)*w0, one multiply fewer.
        return torch.addcmul(b, a - b, w[:, 0])


class DropBlock(nn.Module):
    """DropBlock (Ghiasi 2018) as the paper applies it (section 3.2; rows E5+).

    In training, seeds are drawn with rate gamma = (1 - keep_prob) * H * W / (b^2 (H - b + 1)(W - b + 1))
    times `gamma_scale` (0.25 in stage 3, 1.0 in stage 4) on the valid region, grown into b x b blocks
    by max-pooling, and the survivors rescaled by (mask size / kept count). The mask is one (1, C, H, W)
    array shared by the batch, as the official code draws it, unless `shared_mask=False`.
    With `group_size` (set by `set_group_size`) each group of that many samples gets its own mask and its own
    rescaling, as each official GPU draws and normalises one for its 128 images; a shorter last group (images
    the loader skipped) gets one too. Identity in eval mode and at keep_prob = 1. `keep_prob` is a plain
    attribute set by the engine's schedule (see `set_keep_prob`).
    """

    def __init__(self, block_size: int = 7, gamma_scale: float = 1.0, keep_prob: float = 1.0,
                 shared_mask: bool = True):
        super().__init__()
        self.block_size = block_size
        self.gamma_scale = gamma_scale
        self.shared_mask = shared_mask
        self.group_size: int | None = None
        # A tensor, not a float: torch.compile guards on a float attribute (recompiling as the schedule moves,
        # or at least when it leaves 1.0); a buffer is a graph input instead. Not saved: it is schedule state.
        self.register_buffer("_keep_prob", torch.tensor(float(keep_prob)), persistent=False)

    @property
    def keep_prob(self) -> float:
        return float(self._keep_prob)

    @keep_prob.setter
    def keep_prob(self, value: float) -> None:
        self._keep_prob.fill_(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        if not torch.compiler.is_compiling() and self.keep_prob >= 1.0:
            return x  # eager shortcut; compiled graphs compute the (all-ones) mask instead of branching
        n, c, h, w = x.shape
        b = min(self.block_size, h, w)
        valid_h, valid_w = h - b + 1, w - b + 1
        gamma = (1.0 - self._keep_prob) * (h * w / (b * b * valid_h * valid_w) * self.gamma_scale)
        size = n if not self.group_size else min(self.group_size, n)
        groups = -(-n // size)
        shape = (groups if self.shared_mask else n, c, valid_h, valid_w)
        seeds = (torch.rand(shape, device=x.device) < gamma).to(x.dtype)
        # Seeds sit on the valid region: pad so each seed is the centre of a block fully inside the map.
        lo, hi = (b - 1) // 2, b // 2
        seeds = F.pad(seeds, (lo, hi, lo, hi))
        dropped = F.max_pool2d(seeds, kernel_size=b, stride=1, padding=b // 2)
        if b % 2 == 0:  # an even kernel with padding b//2 yields one extra row/column
            dropped = dropped[:, :, :h, :w]
        keep = 1.0 - dropped
        # Kept counts in float32: a half-precision sum overflows at 65,504 (stage 3 holds 1024 x 14 x 14 values).
        kept = keep.flatten(1).sum(1, dtype=torch.float32)  # per mask
        if groups == 1:
            return x * keep * (keep.numel() / kept.sum().clamp(min=1.0)).to(x.dtype)
        group = torch.arange(n, device=x.device) // size
        if self.shared_mask:  # one mask per group
            scale = (c * h * w) / kept.clamp(min=1.0)
            keep = keep[group]
        else:  # a mask per sample: each group's samples counted together
            values = torch.bincount(group, minlength=groups).to(kept) * (c * h * w)
            scale = values / torch.zeros_like(values).index_add_(0, group, kept).clamp(min=1.0)
        return x * keep * scale[group].view(n, 1, 1, 1).to(x.dtype)

    def extra_repr(self) -> str:
        return (f"block_size={self.block_size}, gamma_scale={self.gamma_scale}, "
                f"keep_prob={self.keep_prob}, shared_mask={self.shared_mask}")


class GhostBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of each group of `group_size` samples ("ghost" batch norm,
    Hoffer 2017): one process with batch 1024 in groups of 128 normalises as the official 8 GPUs x 128 do.

    Each group is normalised by plain BN with its own mean and (biased) variance. The running statistics move
    as the official per-GPU BN leaves them: every GPU updates its own moving mean and variance with its batch's
    mean and Bessel-corrected variance (tf.layers.batch_normalization with fused=True, nets/model_helper.py:34-37;
    the fused kernel's variance keeps the correction), and those variables are synchronised on read with
    aggregation MEAN (Keras's BatchNormalization declares them ON_READ / MEAN), so the checkpoint and the
    evaluation see the mean over GPUs. An exponential average is linear, so the mean of the per-GPU averages
    is the average of the per-step means over groups:
        running = (1 - momentum) * running + momentum * mean over groups of (group mean, group unbiased var).
    A shorter last group (images the loader skipped) is one more group in that mean, as a GPU would be.
    Outside training, or on a batch no larger than a group, it is plain BatchNorm.

    With `deferred` (set by `defer_statistics`: gradient accumulation), a micro-batch's groups add their
    statistics to a pending sum and `commit_statistics` moves the running statistics once per optimizer step,
    with the mean over every group of the step's micro-batches: a step in A micro-batches moves them as one
    step over A GPUs does, not A times.
    """

    group_size: int | None = None
    deferred: bool = False
    _pending: tuple[torch.Tensor, torch.Tensor, int] | None = None  # (sum of means, sum of variances, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.group_size
        grouped = bool(g) and x.shape[0] > g
        if not self.training or not (grouped or self.deferred):
            return super().forward(x)
        self._check_input_dim(x)
        track = self.track_running_stats and self.running_mean is not None
        outs, means, variances = [], [], []
        for part in (x.split(g) if grouped else (x,)):
            # momentum 1 into zero / one buffers leaves exactly the part's mean and unbiased variance there
            mean = torch.zeros_like(self.running_mean) if track else None
            var = torch.ones_like(self.running_var) if track else None
            outs.append(F.batch_norm(part, mean, var, self.weight, self.bias, True, 1.0, self.eps))
            means.append(mean)
            variances.append(var)
        if track:
            with torch.no_grad():
                m, v = torch.stack(means).sum(0), torch.stack(variances).sum(0)
                if self.deferred:
                    pm, pv, n = self._pending or (0, 0, 0)
                    self._pending = (m + pm, v + pv, n + len(means))
                else:
                    self._move(m / len(means), v / len(variances))
        return torch.cat(outs)

    def _move(self, mean: torch.Tensor, var: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
        self.running_var.mul_(1 - factor).add_(var, alpha=factor)

    def commit(self) -> None:
        if self._pending is not None:
            m, v, n = self._pending
            self._pending = None
            with torch.no_grad():
                self._move(m / n, v / n)


class GhostBatchNorm1d(GhostBatchNorm, nn.BatchNorm1d):
    pass


class GhostBatchNorm2d(GhostBatchNorm, nn.BatchNorm2d):
    pass


def _ghost(bn: nn.modules.batchnorm._BatchNorm, group_size: int | None) -> nn.Module:
    """`bn` as a GhostBatchNorm holding the same parameter and buffer tensors (the optimizer's stay valid)."""
    cls = GhostBatchNorm2d if isinstance(bn, nn.BatchNorm2d) else GhostBatchNorm1d
    ghost = cls.__new__(cls)
    ghost.__dict__.update(bn.__dict__)  # the same parameters, buffers and hooks: a change of class only
    ghost.group_size = group_size
    return ghost


def _ghost_layers(model: nn.Module, convert: bool) -> list[GhostBatchNorm]:
    """`model`'s GhostBatchNorms; with `convert`, every plain BatchNorm1d/2d becomes one first, holding the same
    tensors, so the weights, the state dict and the optimizer's parameters are unchanged."""
    if convert:
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if type(child) in (nn.BatchNorm1d, nn.BatchNorm2d):
                    setattr(parent, name, _ghost(child, None))
    return [m for m in model.modules() if isinstance(m, GhostBatchNorm)]


def set_group_size(model: nn.Module, group_size: int | None) -> int:
    """BatchNorm statistics and DropBlock masks per group of `group_size` samples in training (None: the whole
    batch); with a group size every BatchNorm becomes a GhostBatchNorm. Returns how many layers it set."""
    layers = [*_ghost_layers(model, convert=bool(group_size)),
              *(m for m in model.modules() if isinstance(m, DropBlock))]
    for m in layers:
        m.group_size = group_size
    return len(layers)


def defer_statistics(model: nn.Module) -> int:
    """Every BatchNorm of `model` keeps its micro-batches' statistics until `commit_statistics` (gradient
    accumulation: one move of the running statistics per optimizer step). Returns how many layers it set."""
    ghosts = _ghost_layers(model, convert=True)
    for m in ghosts:
        m.deferred = True
    return len(ghosts)


def commit_statistics(model: nn.Module) -> None:
    """Move each deferred BatchNorm's running statistics once, by the mean of what its micro-batches saw."""
    for m in model.modules():
        if isinstance(m, GhostBatchNorm):
            m.commit()


def set_keep_prob(model: nn.Module, keep_prob: float) -> int:
    """Set every DropBlock's keep_prob in `model`; returns how many were set (the schedule's one knob)."""
    if not 0.0 < keep_prob <= 1.0:
        raise ValueError(f"keep_prob must be in (0, 1], got {keep_prob}")
    count = 0
    for m in model.modules():
        if isinstance(m, DropBlock):
            m.keep_prob = keep_prob
            count += 1
    return count


class GeM(nn.Module):
    """Generalised-mean pooling (Radenovic 2018): (mean x^p)^(1/p); p=3 fixed in the paper's retrieval."""

    def __init__(self, p: float = 3.0, learnable: bool = False, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        if learnable:
            self.p = nn.Parameter(torch.tensor(float(p)))
        else:
            self.register_buffer("p", torch.tensor(float(p)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.to(x.dtype)
        return x.clamp(min=self.eps).pow(p).mean((2, 3)).pow(1.0 / p)

    def extra_repr(self) -> str:
        return f"p={float(self.p):.3g}, learnable={isinstance(self.p, nn.Parameter)}"


class CosineClassifier(nn.Module):
    """Normalised softmax head: logits = s * cos(feature, class weight) (the paper's cosine-softmax for
    retrieval; with an angular margin on the target class in the loss it becomes ArcFace)."""

    def __init__(self, in_features: int, num_classes: int, scale: float = 20.0):
        super().__init__()
        self.scale = float(scale)
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.normal_(self.weight, std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.linear(F.normalize(x.float(), dim=1), F.normalize(self.weight.float(), dim=1))

    def extra_repr(self) -> str:
        return f"in_features={self.weight.shape[1]}, num_classes={self.weight.shape[0]}, scale={self.scale:g}"


class SamePool2d(nn.Module):
    """Max or average pooling with TensorFlow's 'SAME' padding, as the official graph pools.

    'SAME' gives ceil(size / stride) outputs and puts the odd pixel of padding after the map (bottom,
    right), where PyTorch pads both sides equally: on an even 112-px map TF's 3x3/2 max-pool pads 0 before
    and 1 after, PyTorch's padding=1 pads 1 and 1, which shifts every window by a pixel. The average leaves
    the padding out of the count, as TF does.
    """

    def __init__(self, kind: str, kernel: int, stride: int):
        super().__init__()
        if kind not in ("max", "avg"):
            raise ValueError(f"SamePool2d kind must be 'max' or 'avg', got {kind!r}")
        self.kind, self.kernel, self.stride = kind, kernel, stride

    def _padding(self, h: int, w: int) -> tuple[int, int, int, int]:
        def total(n: int) -> int:
            return max((-(-n // self.stride) - 1) * self.stride + self.kernel - n, 0)

        ph, pw = total(h), total(w)
        return pw // 2, pw - pw // 2, ph // 2, ph - ph // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self._padding(*x.shape[-2:])
        if self.kind == "max":
            return F.max_pool2d(F.pad(x, pad, value=float("-inf")), self.kernel, self.stride)
        summed = F.avg_pool2d(F.pad(x, pad), self.kernel, self.stride)
        # the share of each window that lies on the map (1 inside, less at the padded edges)
        inside = F.avg_pool2d(F.pad(x.new_ones((1, 1, *x.shape[-2:])), pad), self.kernel, self.stride)
        return summed / inside

    def extra_repr(self) -> str:
        return f"{self.kind}, kernel={self.kernel}, stride={self.stride}, padding=SAME"


class AvgPool(nn.Module):
    """Global average pooling to (N, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))


def tf_variance_scaling_(weight: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """TF 1.x's `tf.variance_scaling_initializer()` with its defaults, the official code's for every conv and
    the embedding (nets/model_helper.py:77, nets/blocks.py:138-179, nets/resnet_model.py:579): scale 1, fan_in,
    a normal truncated at 2 std, so variance scale / fan_in (LeCun's, half of He's 2 / fan_in).

    TF divides the std by 0.8796 (the std of a unit normal truncated at +-2) so that the truncated
    distribution keeps that variance. Drawn as TF does, by redrawing the values beyond 2 std (about 4.6% a
    round): torch's trunc_normal_ inverts the CDF, which takes 6 s for a ResNet-50 on a 2-core CPU, this a
    tenth of that. `weight` is (out, in, ...): fan_in is one output's element count.
    """
    fan_in = weight[0].numel()
    std = math.sqrt(scale / fan_in) / 0.87962566103423978
    with torch.no_grad():
        flat = weight.view(-1)
        flat.normal_(0.0, std)
        redraw = (flat.abs() > 2 * std).nonzero().squeeze(1)
        while redraw.numel():
            values = torch.empty(redraw.numel(), dtype=flat.dtype, device=flat.device).normal_(0.0, std)
            flat[redraw] = values
            redraw = redraw[values.abs() > 2 * std]
    return weight
