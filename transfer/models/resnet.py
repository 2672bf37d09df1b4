"""One ResNet with the paper's network tweaks as constructor options (arXiv 2001.06268, section 3.1).

Block order follows the official code: conv1x1 -> BN -> [DropBlock] -> ReLU; 3x3 or SK conv (stride 1 when
anti-aliased) -> [DropBlock]; [blur, stride 2]; conv1x1 -> BN (zero-gamma) -> [DropBlock] -> [SE];
add the shortcut ([AvgPool] -> conv1x1 -> BN -> [DropBlock]) -> ReLU.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.transforms import InputSpec
from ..errors import ConfigError
from .layers import (
    AvgPool,
    BlurPool,
    CosineClassifier,
    DropBlock,
    GeM,
    SamePool2d,
    SelectiveKernel,
    SqueezeExcite,
    conv_bn,
    tf_variance_scaling_,
)

# Blocks per stage. Big-Little networks regroup their blocks (the paper's section 3.1 and bL-Net):
# R50 keeps [3, 4, 6, 3]; R101 and R152 become [4, 8, 18, 3] and [5, 12, 30, 3].
BASIC_LAYERS = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
BOTTLENECK_LAYERS = {26: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3),
                     200: (3, 24, 36, 3)}
BIG_LITTLE_LAYERS = {26: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (4, 8, 18, 3), 152: (5, 12, 30, 3)}
# Big-Little moves stage 1's downsampling from the max-pool into the stage and keeps stage 3 at the
# resolution of stage 2 (its big branch still works at half of it): strides [2, 2, 1, 2].
PLAIN_STRIDES = (1, 2, 2, 2)
BIG_LITTLE_STRIDES = (2, 2, 1, 2)
STEMS = ("classic", "deep")
SHORTCUTS = ("conv", "avg2", "avg3")
SELECTIVE_KERNELS = (None, "sk", "sk_dagger")
POOLS = ("avg", "gem")
HEADS = ("linear", "cosine")
# How the weight-free pools pad and count. "torch": torchvision's and timm's (symmetric padding, avg-pool
# shortcuts that leave the padding out, no pool on a stride-1 shortcut). "tf": the official TF graph's
# (the stem max-pool 'SAME', avg-pool shortcuts that zero-pad and count the padding, and ResNet-D's stride-1
# shortcut pooled 2x2 'SAME'). Same weights, other function: see docs/architecture.md.
POOLINGS = ("torch", "tf")


@dataclass
class ResNetConfig:
    """Every architectural choice of the network; the named zoo sets these, users override them."""

    depth: int = 50
    layers: tuple[int, ...] | None = None  # blocks per stage; overrides the depth table
    stem: str = "classic"  # "classic" 7x7/2 conv, or "deep" (ResNet-D: three 3x3 convs)
    stem_width: int = 64
    shortcut: str = "conv"  # "conv": strided 1x1; "avg2": ResNet-D 2x2 avg-pool; "avg3": bL-Net 3x3 avg-pool
    se: bool = False
    se_reduction: int = 16
    se_bias: bool = False  # timm's SE convs have biases; the official ones do not
    selective_kernel: str | None = None  # None, "sk" (Table 2 C2) or "sk_dagger" (C3, the final model)
    sk_reduction: int = 2
    sk_min_dim: int = 32
    anti_alias: bool = False
    big_little: bool = False
    bl_alpha: int = 2  # little branch width divisor
    bl_beta: int = 4  # little branch depth divisor
    drop_block: bool = False  # insert DropBlock in stages 3 and 4 (identity until keep_prob < 1)
    drop_block_size: int = 7
    drop_block_gamma_scales: tuple[float, float] = (0.25, 1.0)  # stage 3, stage 4
    drop_block_shared_mask: bool = True
    width: float = 1.0  # channel multiplier for tiny models
    in_chans: int = 3
    num_classes: int = 1000
    embedding_dim: int = 0  # >0: linear + BN to this size between pooling and classifier
    embedding_relu: bool = False  # ReLU between the embedding and the classifier (the official graph has one)
    pool: str = "avg"
    head: str = "linear"  # "linear" classifier, or "cosine" (normalised weights and features, times head_scale)
    head_scale: float = 20.0
    gem_p: float = 3.0
    gem_learnable: bool = False
    zero_gamma: bool = True
    bn_momentum: float = 0.1
    bn_eps: float = 1e-5
    pooling: str = "torch"  # "torch" or "tf": see POOLINGS

    def __post_init__(self) -> None:
        def choice(key: str, value, allowed) -> None:
            if value not in allowed:
                raise ConfigError(f"model option {key}={value!r} is not one of {list(allowed)}")

        choice("stem", self.stem, STEMS)
        choice("shortcut", self.shortcut, SHORTCUTS)
        choice("selective_kernel", self.selective_kernel, SELECTIVE_KERNELS)
        choice("pool", self.pool, POOLS)
        choice("head", self.head, HEADS)
        choice("pooling", self.pooling, POOLINGS)
        if self.layers is not None:
            self.layers = tuple(int(n) for n in self.layers)
            if len(self.layers) != 4 or min(self.layers) < 1:
                raise ConfigError(f"model option layers={list(self.layers)} must be 4 positive block counts")
        else:
            table = self.layer_table()
            if self.depth not in table:
                with_bl = " with big_little=True" if self.big_little else ""
                raise ConfigError(f"model option depth={self.depth} is not available{with_bl}; "
                                  f"choose one of {sorted(table)}")
        if self.big_little:
            if self.block == "basic":
                raise ConfigError("model option big_little=True needs bottleneck blocks (depth >= 26)")
            if min(self.blocks[:3]) < 2:
                raise ConfigError("model option big_little=True needs at least 2 blocks in stages 1-3")
        for key in ("width", "stem_width", "bl_alpha", "bl_beta", "se_reduction", "sk_reduction",
                    "drop_block_size"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"model option {key}={getattr(self, key)} must be positive")
        if self.num_classes < 0 or self.embedding_dim < 0:
            raise ConfigError("model options num_classes and embedding_dim must be >= 0")

    def layer_table(self) -> dict[int, tuple[int, ...]]:
        if self.big_little:
            return BIG_LITTLE_LAYERS
        return BASIC_LAYERS if self.depth in BASIC_LAYERS else BOTTLENECK_LAYERS

    @property
    def block(self) -> str:
        return "basic" if self.depth in BASIC_LAYERS and not self.big_little else "bottleneck"

    @property
    def blocks(self) -> tuple[int, ...]:
        return self.layers if self.layers is not None else self.layer_table()[self.depth]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d


@dataclass(frozen=True)
class BlockOptions:
    """The per-block switches of one stage, resolved once from the config, and the factories that turn them
    into layers: every block asks these for its spatial conv, its attention, its blur, its DropBlocks and its
    shortcut, so the blocks differ only in how they wire them."""

    bn: dict
    se: bool = False
    se_reduction: int = 16
    se_bias: bool = False
    selective_kernel: str | None = None
    sk_reduction: int = 2
    sk_min_dim: int = 32
    anti_alias: bool = False
    shortcut: str = "conv"
    drop_block_size: int = 7
    drop_block_scale: float | None = None  # None: no DropBlock in this stage
    drop_block_shared_mask: bool = True
    pooling: str = "torch"

    @classmethod
    def for_stage(cls, cfg: ResNetConfig, stage: int) -> BlockOptions:
        """Stage `stage` (0-3) of `cfg`: DropBlock only in stages 3 and 4, with their gamma scales."""
        return cls(bn={"momentum": cfg.bn_momentum, "eps": cfg.bn_eps},
                   se=cfg.se, se_reduction=cfg.se_reduction, se_bias=cfg.se_bias,
                   selective_kernel=cfg.selective_kernel, sk_reduction=cfg.sk_reduction, sk_min_dim=cfg.sk_min_dim,
                   anti_alias=cfg.anti_alias, shortcut=cfg.shortcut, pooling=cfg.pooling,
                   drop_block_size=cfg.drop_block_size, drop_block_shared_mask=cfg.drop_block_shared_mask,
                   drop_block_scale=cfg.drop_block_gamma_scales[stage - 2] if cfg.drop_block and stage >= 2 else None)

    def drop(self) -> nn.Module:
        if self.drop_block_scale is None:
            return nn.Identity()
        return DropBlock(self.drop_block_size, self.drop_block_scale, shared_mask=self.drop_block_shared_mask)

    def spatial_stride(self, stride: int) -> int:
        """The 3x3 conv's stride: 1 when anti-aliased, the blur after it then does the downsampling."""
        return 1 if self.anti_alias else stride

    def blur(self, channels: int, stride: int) -> nn.Module:
        return BlurPool(channels, stride) if self.anti_alias and stride > 1 else nn.Identity()

    def selective(self, in_ch: int, out_ch: int, stride: int) -> SelectiveKernel | None:
        """The Selective Kernel conv that replaces a block's 3x3 conv + BN + ReLU, or None without SK."""
        if not self.selective_kernel:
            return None
        return SelectiveKernel(in_ch, out_ch, self.spatial_stride(stride), kind=self.selective_kernel,
                               reduction=self.sk_reduction, min_dim=self.sk_min_dim, bn=self.bn)

    def conv3x3(self, in_ch: int, out_ch: int, stride: int) -> tuple[nn.Conv2d | None, nn.BatchNorm2d | None]:
        """The plain 3x3 conv and its BN where there is no SK conv (None, None where there is)."""
        if self.selective_kernel:
            return None, None
        return (nn.Conv2d(in_ch, out_ch, 3, self.spatial_stride(stride), 1, bias=False),
                nn.BatchNorm2d(out_ch, **self.bn))

    def attention(self, channels: int) -> nn.Module:
        return SqueezeExcite(channels, self.se_reduction, self.se_bias) if self.se else nn.Identity()


def shortcut_pool(kind: str, stride: int, pooling: str) -> nn.Module | None:
    """The weight-free pool in front of an avg-pool shortcut's 1x1 conv, or None.

    "tf" follows the official graph: it zero-pads as for a conv of the pool's size (2x2: 0 before, 1 after;
    3x3: 1 and 1) and counts the padding in the mean, and ResNet-D pools 2x2 'SAME' at stride 1 as well.
    "torch" is timm's: the padding left out of the mean, nothing at stride 1.
    """
    tf = pooling == "tf"
    if kind == "avg2" and stride > 1:
        if tf:
            return nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.AvgPool2d(2, stride))
        return nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
    if kind == "avg2" and tf:
        return SamePool2d("avg", 2, 1)
    if kind == "avg3" and stride > 1:
        return nn.AvgPool2d(3, stride, padding=1, count_include_pad=tf)
    return None


def make_shortcut(in_ch: int, out_ch: int, stride: int, opts: BlockOptions) -> nn.Sequential:
    """Projection shortcut: [avg-pool] -> conv1x1 -> BN -> [DropBlock].

    With an avg-pool shortcut the pool does the downsampling, so the 1x1 conv sees every pixel instead of
    one in four: ResNet-D's 2x2 pool ("avg2"), or bL-Net's 3x3 pool with padding 1 ("avg3"), which is the
    "D" of the paper's final models.
    """
    mods: dict[str, nn.Module] = {}
    conv_stride = stride
    if opts.shortcut != "conv":
        pool = shortcut_pool(opts.shortcut, stride, opts.pooling)
        if pool is not None:
            mods["pool"] = pool
        conv_stride = 1
    mods["conv"] = nn.Conv2d(in_ch, out_ch, 1, conv_stride, bias=False)
    mods["bn"] = nn.BatchNorm2d(out_ch, **opts.bn)
    mods["drop"] = opts.drop()
    return nn.Sequential(OrderedDict(mods))


class ResidualBlock(nn.Module):
    """What every block shares: output = ReLU(residual(x) + shortcut(x)), with [SE] at the end of the residual
    branch and a projection shortcut where the shape changes; subclasses build and wire the residual branch.

    The layers keep torchvision's names (conv1, bn1, ...), so torchvision and timm weights load by renaming
    the stages alone; where an SK conv replaces a 3x3 conv + BN, those two are None and `sk` holds it.
    """

    last_bn: str  # the name of the residual branch's last BN (zero-gamma)

    def __init__(self, stride: int, last_relu: bool):
        super().__init__()
        self.stride = stride
        self.last_relu = last_relu

    def add_attention_and_shortcut(self, in_ch: int, out_ch: int, stride: int, opts: BlockOptions,
                                   projection: bool | None) -> None:
        """[SE] and the shortcut (a projection where the shape changes), created after the residual branch as
        the official graph creates them, so the seeded initialisation draws in the same order."""
        self.se = opts.attention(out_ch)
        if projection is None:
            projection = stride != 1 or in_ch != out_ch
        self.shortcut = make_shortcut(in_ch, out_ch, stride, opts) if projection else nn.Identity()

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch alone (zero at initialisation with zero-gamma)."""
        raise TypeError(f"{type(self).__name__} must define residual()")

    @staticmethod
    def spatial(sk: SelectiveKernel | None, conv: nn.Conv2d | None, bn: nn.BatchNorm2d | None,
                x: torch.Tensor) -> torch.Tensor:
        """The 3x3 step: the SK conv where there is one, else conv -> BN -> ReLU."""
        return sk(x) if sk is not None else F.relu(bn(conv(x)), inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.residual(x)
        y += self.shortcut(x)  # in place, as torchvision: one fewer full-size allocation per block
        return F.relu(y, inplace=True) if self.last_relu else y

    def zero_init_last(self) -> None:
        nn.init.zeros_(getattr(self, self.last_bn).weight)


class Bottleneck(ResidualBlock):
    """ResNet v1.5 bottleneck (stride in the 3x3), with the paper's optional parts."""

    expansion = 4
    last_bn = "bn3"

    def __init__(self, in_ch: int, width: int, stride: int, opts: BlockOptions, *,
                 projection: bool | None = None, last_relu: bool = True):
        super().__init__(stride, last_relu)
        out_ch = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width, **opts.bn)
        self.drop1 = opts.drop()
        self.sk = opts.selective(width, width, stride)
        self.conv2, self.bn2 = opts.conv3x3(width, width, stride)
        self.drop2 = opts.drop()
        self.blur = opts.blur(width, stride)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch, **opts.bn)
        self.drop3 = opts.drop()
        self.add_attention_and_shortcut(in_ch, out_ch, stride, opts, projection)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.drop1(self.bn1(self.conv1(x))), inplace=True)
        y = self.blur(self.drop2(self.spatial(self.sk, self.conv2, self.bn2, y)))
        return self.se(self.drop3(self.bn3(self.conv3(y))))


class BasicBlock(ResidualBlock):
    """Two 3x3 convs (ResNet-18/34); the first one takes the stride, or the SK conv when enabled."""

    expansion = 1
    last_bn = "bn2"

    def __init__(self, in_ch: int, width: int, stride: int, opts: BlockOptions, *,
                 projection: bool | None = None, last_relu: bool = True):
        super().__init__(stride, last_relu)
        self.sk = opts.selective(in_ch, width, stride)
        self.conv1, self.bn1 = opts.conv3x3(in_ch, width, stride)
        self.drop1 = opts.drop()
        self.blur = opts.blur(width, stride)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width, **opts.bn)
        self.drop2 = opts.drop()
        self.add_attention_and_shortcut(in_ch, width, stride, opts, projection)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        y = self.blur(self.drop1(self.spatial(self.sk, self.conv1, self.bn1, x)))
        return self.se(self.drop2(self.bn2(self.conv2(y))))


class Stem(nn.Module):
    """Classic 7x7/2 conv or the ResNet-D deep stem (3x3/2, 3x3, 3x3), then 3x3/2 max-pool.

    With Big-Little the max-pool gives way to the bL stem: a big path (3x3/2 conv + BN) and a little path
    (3x3 conv at width/alpha, 3x3/2 conv, 1x1 conv back to width + BN), merged by ReLU(sum) -> 1x1 conv.
    """

    def __init__(self, kind: str, in_chans: int, width: int, bn: dict, *, big_little_alpha: int = 0,
                 pooling: str = "torch"):
        super().__init__()
        if kind == "classic":
            self.conv1 = nn.Conv2d(in_chans, width, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(width, **bn)
            self.deep = None
        else:
            half = width // 2
            self.conv1 = None
            self.deep = nn.Sequential(conv_bn(in_chans, half, 3, 2, bn=bn), conv_bn(half, half, 3, bn=bn),
                                      conv_bn(half, width, 3, bn=bn))
        self.big_little = big_little_alpha > 0
        if self.big_little:
            little = max(width // big_little_alpha, 1)
            self.big = conv_bn(width, width, 3, 2, relu=False, bn=bn)
            self.little = nn.Sequential(conv_bn(width, little, 3, bn=bn), conv_bn(little, little, 3, 2, bn=bn),
                                        conv_bn(little, width, 1, relu=False, bn=bn))
            self.merge = conv_bn(width, width, 1, bn=bn)
        else:
            self.pool = SamePool2d("max", 3, 2) if pooling == "tf" else nn.MaxPool2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.deep(x) if self.deep is not None else F.relu(self.bn1(self.conv1(x)), inplace=True)
        if not self.big_little:
            return self.pool(x)
        y = self.big(x)
        y += self.little(x)
        return self.merge(F.relu(y, inplace=True))


class PlainStage(nn.Sequential):
    """A stack of residual blocks; the first one changes stride and width."""

    def __init__(self, block: type, in_ch: int, width: int, blocks: int, stride: int, opts: BlockOptions):
        mods = [block(in_ch, width, stride, opts)]
        mods += [block(width * block.expansion, width, 1, opts) for _ in range(blocks - 1)]
        super().__init__(*mods)


class BigLittleStage(nn.Module):
    """A Big-Little stage (Chen 2019, bL-Net; the paper's row E9).

    big: blocks-1 bottlenecks, the first at stride 2, the last without its final ReLU (the merge applies it);
    little: max(1, blocks // beta - 1) bottlenecks at width/alpha and full resolution, then 1x1 conv + BN to
    the stage width; merge: nearest-upsampled big + little -> ReLU -> one bottleneck with the stage stride.
    """

    def __init__(self, in_ch: int, width: int, blocks: int, stride: int, opts: BlockOptions,
                 alpha: int, beta: int):
        super().__init__()
        out_ch = width * Bottleneck.expansion
        n_big = blocks - 1
        big = [Bottleneck(in_ch, width, 2, opts)]
        big += [Bottleneck(out_ch, width, 1, opts) for _ in range(n_big - 1)]
        big[-1].last_relu = False
        self.big = nn.Sequential(*big)
        little_width = max(width // alpha, 1)
        n_little = max(1, blocks // beta - 1)
        # The official code opens every block layer with a projection shortcut, so the little branch's first
        # block projects even where its input already has the output width (R50, stages 2 and 3).
        little = [Bottleneck(in_ch, little_width, 1, opts, projection=True)]
        little += [Bottleneck(little_width * Bottleneck.expansion, little_width, 1, opts)
                   for _ in range(n_little - 1)]
        self.little = nn.Sequential(*little)
        self.little_proj = conv_bn(little_width * Bottleneck.expansion, out_ch, 1, relu=False, bn=opts.bn)
        # The official code opens every block layer with a projection shortcut, the merge block included.
        self.merge = Bottleneck(out_ch, width, stride, opts, projection=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        little = self.little_proj(self.little(x))
        little += F.interpolate(self.big(x), size=little.shape[-2:], mode="nearest")
        return self.merge(F.relu(little, inplace=True))


def _channels(c: float, width: float) -> int:
    return max(round(c * width), 1)


class ResNet(nn.Module):
    """ResNet with stems, shortcuts, attention, anti-aliasing, Big-Little and DropBlock as options.

    Features API: `stage_features(x)` (per-stage maps, described by `feature_info` as timm's models do),
    `forward_features(x)` (last map),
    `pool_features(x)` (pooled vector, after the embedding layer if any), `forward_head(v)` (logits).
    """

    def __init__(self, config: ResNetConfig | None = None, *, init_weights: bool = True, **overrides):
        """`init_weights=False` skips the official initialisation (6 s for a ResNet-152 on 2 CPU cores) where
        a weights file will supply every conv and BN anyway."""
        super().__init__()
        cfg = dataclasses.replace(config, **overrides) if config else ResNetConfig(**overrides)
        self.config = cfg
        # What the network is, beyond its layers: the zoo name and the options given to create_model (None and
        # {} for a bare ResNet), the preprocessing it takes, and the sidecar of the weights it was loaded from.
        # create_model and load_model (models/factory.py) fill them; a weights file's sidecar records them.
        self.arch: str | None = None
        self.overrides: dict = {}
        self.input_spec: InputSpec = InputSpec()
        self.weights_metadata: dict = {}
        bn = {"momentum": cfg.bn_momentum, "eps": cfg.bn_eps}
        stem_width = _channels(cfg.stem_width, cfg.width)
        self.stem = Stem(cfg.stem, cfg.in_chans, stem_width, bn,
                         big_little_alpha=cfg.bl_alpha if cfg.big_little else 0, pooling=cfg.pooling)
        block = BasicBlock if cfg.block == "basic" else Bottleneck
        strides = BIG_LITTLE_STRIDES if cfg.big_little else PLAIN_STRIDES
        in_ch = stem_width
        self.stages = nn.ModuleList()
        # timm's per-stage description, for detection and retrieval heads that tap the stages: channels,
        # reduction (input size / map size) and the module that yields the map (`stage_features` order).
        self.feature_info: list[dict] = []
        reduction = 4  # every stem halves twice: conv/2 then the max-pool or the Big-Little stem's /2
        for i, (n, stride) in enumerate(zip(cfg.blocks, strides, strict=True)):
            width = _channels(64 * 2**i, cfg.width)
            opts = BlockOptions.for_stage(cfg, i)
            if cfg.big_little and i < 3:
                stage = BigLittleStage(in_ch, width, n, stride, opts, cfg.bl_alpha, cfg.bl_beta)
            else:
                stage = PlainStage(block, in_ch, width, n, stride, opts)
            self.stages.append(stage)
            in_ch = width * block.expansion
            reduction *= stride
            self.feature_info.append({"num_chs": in_ch, "reduction": reduction, "module": f"stages.{i}"})
        self.pool = GeM(cfg.gem_p, cfg.gem_learnable) if cfg.pool == "gem" else AvgPool()
        if cfg.embedding_dim:
            self.embedding = nn.Sequential(nn.Linear(in_ch, cfg.embedding_dim, bias=False),
                                           nn.BatchNorm1d(cfg.embedding_dim, **bn))
            self.num_features = cfg.embedding_dim
        else:
            self.embedding = nn.Identity()
            self.num_features = in_ch
        self.fc: nn.Module = nn.Identity()
        self.reset_classifier(cfg.num_classes)
        if init_weights:
            self._init_weights()

    def _init_weights(self) -> None:
        """The official graph's initialisers (TF 1.14 defaults; tests/test_init.py checks each layer against
        the graph's own draws): every conv, SE and SK 1x1 included, and the embedding, from
        `tf.variance_scaling_initializer()` (truncated normal, variance 1 / fan_in); biases 0; BN gamma 1,
        beta 0, and gamma 0 on each block's last BN with zero_gamma (the official pre-training flag,
        nets/resnet_model.py:84). The classifier is `reset_classifier`'s."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                tf_variance_scaling_(m.weight)
                if m.bias is not None:  # timm's SE convs (se_bias); TF's default bias initialiser is zeros
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if isinstance(self.embedding, nn.Sequential):
            # the official embedding is a bias-free 1x1 conv on the pooled map (nets/resnet_model.py:576-580)
            tf_variance_scaling_(self.embedding[0].weight)
        if self.config.zero_gamma:
            for m in self.modules():
                if isinstance(m, ResidualBlock):
                    m.zero_init_last()

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a fresh one for `num_classes` (0 = no classifier: logits = features)."""
        self.config.num_classes = num_classes
        if num_classes and self.config.head == "cosine":
            self.fc = CosineClassifier(self.num_features, num_classes, self.config.head_scale)
        elif num_classes:
            fc = nn.Linear(self.num_features, num_classes)
            # tf.layers.dense without a kernel initialiser: Glorot-uniform, U(+-sqrt(6 / (in + out))); the
            # softmax loss's bias initialiser is zeros (nets/resnet_model.py:240, 595-597)
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)
            self.fc = fc
        else:
            self.fc = nn.Identity()

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def stage_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def pool_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(self.pool(self.forward_features(x)))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        if self.config.embedding_relu and self.config.embedding_dim:
            features = F.relu(features)
        return self.fc(features)

    def preprocess(self, images) -> torch.Tensor:
        """The evaluation preprocessing these weights record (resize, crop, normalisation): a PIL image or a
        uint8 (3, H, W) tensor -> (3, h, w); a list of them -> (N, 3, h, w). `model(model.preprocess(img)[None])`."""
        t = self.input_spec.eval_transform()
        if isinstance(images, list | tuple):
            return torch.stack([t(i) for i in images])
        return t(images)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.pool_features(x))
