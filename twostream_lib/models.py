"""The ConvNets of the two streams (paper §5, Fig. 1), their multitask form (§4), and ResNet backbones.

CNN-M-2048 (Chatfield et al. 2014, Caffe's ``VGG_CNN_M_2048``) in the paper's layout::

    conv1  96 x 7x7 /2        ReLU  LRN  max-pool 3x3 /2
    conv2 256 x 5x5 /2 pad 1  ReLU  LRN  max-pool 3x3 /2     (temporal net: no LRN here, §5)
    conv3 512 x 3x3 pad 1     ReLU
    conv4 512 x 3x3 pad 1     ReLU
    conv5 512 x 3x3 pad 1     ReLU       max-pool 3x3 /2
    full6 4096  ReLU  dropout
    full7 2048  ReLU  dropout
    fc8 (classifier, "softmax" layer of the paper)

The strides and paddings are CNN-M's (Chatfield et al. 2014, Table 1: "conv2 256x5x5, st. 2, pad 1"), as in the
published ``VGG_CNN_M_2048`` Caffe definition and its MatConvNet port ``imagenet-vgg-m-2048``: conv1 has no
padding, conv2 pads by 1, conv3-5 by 1. Pools are in Caffe's ceil mode, so a 224x224 input gives 224 -conv1-> 109 -pool-> 54 -conv2-> 26 -pool-> 13
-conv3..5-> 13 -pool-> 6: full6 sees 6x6x512 = 18432 features.

LRN is Caffe's across-channel LRN with VGG CNN-M's values: ``local_size=5, alpha=5e-4, beta=0.75, k=2``
(:data:`CNN_M_LRN`). Caffe and :class:`torch.nn.LocalResponseNorm` both divide ``alpha`` by ``local_size``,
so the values carry over unchanged. The nets use :class:`CrossChannelLRN`, torch's LRN computed the faster way.

Every network is split into a **trunk** (input -> feature vector, shape ``(B, feature_dim)``) and a **head**
(:class:`StreamNet`, one ``nn.Linear``) or **heads** (:class:`MultiTaskNet`, one ``nn.Linear`` per dataset,
§4), so multitask learning shares the trunk and "last layer only" fine-tuning (Table 1a) freezes it.

Weight initialisation (the paper does not state it; Caffe's ImageNet nets used Gaussians with std 0.01):
He/Kaiming normal (fan-in, ReLU gain) for conv1-5, full6 and full7 — it trains from scratch without batch
norm at every ``width`` — and a Gaussian with std 0.01 for the classifier heads; all biases 0.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "CNN_M_LRN",
    "CNN_M_MIN_INPUT",
    "CrossChannelLRN",
    "CNNMTrunk",
    "StreamNet",
    "MultiTaskNet",
    "cnn_m_2048",
    "cnn_m_2048_multitask",
    "cnn_m_trunk_size",
    "multitask_loss",
    "multitask_losses",
    "resnet",
    "cross_modality_init",
    "set_finetune_mode",
    "head_parameters",
    "build_model",
    "build_model_for",
    "count_parameters",
    "layer_table",
]

#: Caffe LRN settings of VGG CNN-M (norm1, norm2).
CNN_M_LRN = dict(size=5, alpha=5e-4, beta=0.75, k=2.0)


class CrossChannelLRN(nn.LocalResponseNorm):
    """:class:`torch.nn.LocalResponseNorm` (same arguments, same result up to float rounding), computed faster.

    ``b_c = a_c / (k + alpha / size * sum of a_j ** 2 over the window of size channels around c) ** beta``, zero
    padded at the ends as torch and Caffe do. On ``(B, C, H, W)`` input the window sums are one 1x1 convolution
    of ``a ** 2`` with a fixed 0/1 band matrix ``(C, C, 1, 1)``; torch pads the channels and runs a 3-D average
    pool, which on a CPU made LRN the costliest layer of the lab nets (BENCHMARKS.md, section 3b). Other input
    ranks use torch's own computation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            return super().forward(x)
        i = torch.arange(x.shape[1], device=x.device)
        offset = i[None, :] - i[:, None]  # (C_out, C_in): input channel - output channel
        band = (offset >= -(self.size // 2)) & (offset <= (self.size - 1) // 2)
        sums = F.conv2d(x * x, band.to(x.dtype)[:, :, None, None])
        return x / (sums * (self.alpha / self.size) + self.k).pow(self.beta)


#: Channels of conv1..conv5 and units of full6, full7 at width 1 (Chatfield et al. 2014, CNN-M-2048).
CNN_M_CHANNELS = (96, 256, 512, 512, 512)
CNN_M_FC = (4096, 2048)

#: The smallest square input the CNN-M trunk accepts (pool5 then outputs 1x1).
CNN_M_MIN_INPUT = 41


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    h, w = (int(s) for s in size)
    return (h, w)


def _scaled(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


def _conv_out(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - k) // s + 1


def _pool_out_ceil(n: int, k: int = 3, s: int = 2) -> int:
    # PyTorch's (and Caffe's) ceil-mode output size with no padding: the last window may run past the edge
    # but must start inside the input.
    out = -(-(n - k) // s) + 1
    if (out - 1) * s >= n:
        out -= 1
    return out


def cnn_m_trunk_size(input_size: int | Sequence[int] = 224) -> tuple[int, int]:
    """Spatial size ``(h, w)`` of CNN-M's pool5 output for an input of ``input_size`` (int or ``(H, W)``).

    224 -> (6, 6). Raises ``ValueError`` if the input is too small for a layer (the smallest is
    :data:`CNN_M_MIN_INPUT`).
    """
    out = []
    for n in _pair(input_size):
        for name, f in (("conv1", lambda n: _conv_out(n, 7, 2, 0)), ("pool1", _pool_out_ceil),
                        ("conv2", lambda n: _conv_out(n, 5, 2, 1)), ("pool2", _pool_out_ceil),
                        ("conv3-5", lambda n: _conv_out(n, 3, 1, 1)), ("pool5", _pool_out_ceil)):
            n = f(n)
            if n < 1:
                raise ValueError(
                    f"CNN-M-2048: input size {_pair(input_size)} is too small: {name} would output {n} pixels; "
                    f"the smallest input is {CNN_M_MIN_INPUT}x{CNN_M_MIN_INPUT}")
        out.append(n)
    return (out[0], out[1])


def _init_he(m: nn.Module) -> None:
    nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
    if m.bias is not None:
        nn.init.zeros_(m.bias)


def _init_head(m: nn.Linear) -> None:
    nn.init.normal_(m.weight, std=0.01)
    nn.init.zeros_(m.bias)


class CNNMTrunk(nn.Module):
    """CNN-M-2048 from the input to the full7 features (§5, Fig. 1).

    ``forward(x)``: ``x`` of shape ``(B, in_channels, H, W)`` with ``(H, W) == input_size`` ->
    ``(B, feature_dim)`` (full7 after ReLU and dropout).

    Attributes: ``features`` (conv1..pool5, Caffe layer names), ``flatten``, ``fc6``, ``relu6``, ``drop6``,
    ``fc7``, ``relu7``, ``drop7``; ``feature_dim``, ``input_size``, ``in_channels``.
    """

    def __init__(self, in_channels: int = 3, dropout: float = 0.5, width: float = 1.0,
                 conv2_norm: bool = True, input_size: int | Sequence[int] = 224):
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"CNN-M-2048: in_channels must be >= 1, got {in_channels}")
        if not width > 0:
            raise ValueError(f"CNN-M-2048: width must be > 0, got {width}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"CNN-M-2048: dropout must be in [0, 1), got {dropout}")
        c1, c2, c3, c4, c5 = (_scaled(c, width) for c in CNN_M_CHANNELS)
        f6, f7 = (_scaled(c, width) for c in CNN_M_FC)
        self.in_channels = in_channels
        self.input_size = _pair(input_size)
        self.conv2_norm = conv2_norm
        h, w = cnn_m_trunk_size(self.input_size)
        layers: list[tuple[str, nn.Module]] = [
            ("conv1", nn.Conv2d(in_channels, c1, 7, stride=2)),
            ("relu1", nn.ReLU(inplace=True)),
            ("norm1", CrossChannelLRN(**CNN_M_LRN)),
            ("pool1", nn.MaxPool2d(3, 2, ceil_mode=True)),
            ("conv2", nn.Conv2d(c1, c2, 5, stride=2, padding=1)),
            ("relu2", nn.ReLU(inplace=True)),
        ]
        if conv2_norm:
            layers.append(("norm2", CrossChannelLRN(**CNN_M_LRN)))
        layers += [
            ("pool2", nn.MaxPool2d(3, 2, ceil_mode=True)),
            ("conv3", nn.Conv2d(c2, c3, 3, padding=1)),
            ("relu3", nn.ReLU(inplace=True)),
            ("conv4", nn.Conv2d(c3, c4, 3, padding=1)),
            ("relu4", nn.ReLU(inplace=True)),
            ("conv5", nn.Conv2d(c4, c5, 3, padding=1)),
            ("relu5", nn.ReLU(inplace=True)),
            ("pool5", nn.MaxPool2d(3, 2, ceil_mode=True)),
        ]
        self.features = nn.Sequential(OrderedDict(layers))
        self.flatten = nn.Flatten(1)
        self.fc6 = nn.Linear(c5 * h * w, f6)
        self.relu6 = nn.ReLU(inplace=True)
        self.drop6 = nn.Dropout(dropout)
        self.fc7 = nn.Linear(f6, f7)
        self.relu7 = nn.ReLU(inplace=True)
        self.drop7 = nn.Dropout(dropout)
        self.feature_dim = f7
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                _init_he(m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[-2:]) != self.input_size:
            raise ValueError(
                f"CNN-M-2048 trunk was built for inputs (B, {self.in_channels}, {self.input_size[0]}, "
                f"{self.input_size[1]}); got {tuple(x.shape)}. Build it with input_size=... to match the crop.")
        x = self.flatten(self.features(x))
        x = self.drop6(self.relu6(self.fc6(x)))
        return self.drop7(self.relu7(self.fc7(x)))


class _TrunkHeadNet(nn.Module):
    """Shared behaviour: ``trunk_frozen`` keeps the trunk's batch-norm layers in eval mode (Table 1a, "last")."""

    trunk: nn.Module
    trunk_frozen: bool = False

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.trunk_frozen:
            # A frozen trunk must not drift through batch-norm running statistics. Dropout stays active:
            # Table 1a's "last layer only" rows differ by their dropout ratio.
            for m in self.trunk.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self


class StreamNet(_TrunkHeadNet):
    """One stream (spatial or temporal): ``trunk`` -> (optional dropout) -> ``head`` (§3, Fig. 1).

    ``forward(x)``: ``(B, C_in, H, W)`` -> logits ``(B, num_classes)``.
    """

    def __init__(self, trunk: nn.Module, feature_dim: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.trunk = trunk
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(feature_dim, num_classes)
        _init_head(self.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.trunk(x)))


class MultiTaskNet(_TrunkHeadNet):
    """Multitask learning (§4): one shared trunk, one softmax head per dataset (e.g. UCF-101 and HMDB-51).

    ``forward(x)``: ``(B, C_in, H, W)`` -> list of logits, ``[(B, C_0), (B, C_1), ...]``, one per head;
    ``forward(x, task=k)`` -> the logits of head ``k`` only, ``(B, C_k)``. Train with :func:`multitask_loss`.
    """

    def __init__(self, trunk: nn.Module, feature_dim: int, num_classes_per_task: Sequence[int],
                 dropout: float = 0.0):
        super().__init__()
        num_classes_per_task = [int(c) for c in num_classes_per_task]
        if not num_classes_per_task or min(num_classes_per_task) < 1:
            raise ValueError(f"MultiTaskNet needs >= 1 task with >= 1 class each, got {num_classes_per_task}")
        self.trunk = trunk
        self.feature_dim = feature_dim
        self.num_classes = num_classes_per_task
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.heads = nn.ModuleList(nn.Linear(feature_dim, c) for c in num_classes_per_task)
        for h in self.heads:
            _init_head(h)

    def forward(self, x: torch.Tensor, task: int | None = None):
        f = self.drop(self.trunk(x))
        if task is not None:
            if not 0 <= task < len(self.heads):
                raise ValueError(f"task {task} out of range: this net has {len(self.heads)} heads")
            return self.heads[task](f)
        return [h(f) for h in self.heads]


def multitask_losses(logits_list: Sequence[torch.Tensor], labels: torch.Tensor, task_ids: torch.Tensor,
                     task_counts: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Per-task cross-entropy (§4): head ``k``'s loss over the samples with ``task_ids == k`` only, summed and
    divided by ``task_counts[k]`` — by default the number of such samples in this batch (the mean). Data-parallel
    training passes the counts of the *global* batch, so that the processes' losses add up to the loss of one
    process holding the whole batch.

    ``logits_list``: ``[(B, C_k)]``; ``labels``, ``task_ids``: ``(B,)`` integer tensors (a label indexes its own
    task's classes). Returns one scalar per task. A task with no sample here gives ``0 * logits.sum()``: zero,
    but its head still takes part in the graph (DDP needs a gradient, even a zero one, for every parameter).
    """
    labels = torch.as_tensor(labels, device=logits_list[0].device).long()
    task_ids = torch.as_tensor(task_ids, device=logits_list[0].device).long()
    if labels.shape != task_ids.shape or labels.dim() != 1:
        raise ValueError(f"labels {tuple(labels.shape)} and task_ids {tuple(task_ids.shape)} must be equal 1-D")
    if task_ids.numel() and (task_ids.min() < 0 or task_ids.max() >= len(logits_list)):
        raise ValueError(f"task_ids must lie in [0, {len(logits_list)}), got {task_ids.unique().tolist()}")
    if task_counts is None:
        task_counts = torch.bincount(task_ids, minlength=len(logits_list))
    out = []
    for k, logits in enumerate(logits_list):
        mask = task_ids == k
        ce = F.cross_entropy(logits[mask], labels[mask], reduction="sum")  # 0 for no sample
        out.append(ce / task_counts[k].clamp(min=1) + 0.0 * logits.sum())
    return out


def multitask_loss(logits_list: Sequence[torch.Tensor], labels: torch.Tensor, task_ids: torch.Tensor,
                   task_counts: torch.Tensor | None = None) -> torch.Tensor:
    """The multitask training loss (§4): "the sum of the individual tasks' losses".

    Each head's cross-entropy is averaged over its own dataset's samples only; a task absent from the batch
    contributes 0 (never NaN). Arguments as in :func:`multitask_losses`. Returns a scalar tensor.
    """
    return torch.stack(multitask_losses(logits_list, labels, task_ids, task_counts)).sum()


def cnn_m_2048(in_channels: int = 3, num_classes: int = 101, dropout: float = 0.5, width: float = 1.0,
               conv2_norm: bool = True, *, input_size: int | Sequence[int] = 224) -> StreamNet:
    """CNN-M-2048 as one stream (§5): spatial ``in_channels=3``; temporal ``in_channels=2L`` and
    ``conv2_norm=False`` (the paper drops conv2's LRN in the temporal net). ``width`` scales every layer's
    channels and units (0.25 -> 24, 64, 128, 128, 128, fc 1024, 512); ``input_size`` (int or ``(H, W)``)
    is the crop size, which fixes full6's input size (224 -> 6x6x512).
    """
    trunk = CNNMTrunk(in_channels, dropout, width, conv2_norm, input_size)
    return StreamNet(trunk, trunk.feature_dim, num_classes)


def cnn_m_2048_multitask(in_channels: int = 3, num_classes: Sequence[int] = (101, 51), dropout: float = 0.5,
                         width: float = 1.0, conv2_norm: bool = True,
                         input_size: int | Sequence[int] = 224) -> MultiTaskNet:
    """CNN-M-2048 trunk with one head per dataset (§4): ``num_classes=(101, 51)`` for UCF-101 + HMDB-51."""
    trunk = CNNMTrunk(in_channels, dropout, width, conv2_norm, input_size)
    return MultiTaskNet(trunk, trunk.feature_dim, num_classes)


def cross_modality_init(conv: nn.Conv2d, rgb_weight: torch.Tensor | None = None,
                        in_channels: int = 20) -> nn.Conv2d:
    """Cross-modality initialisation of a first layer (Wang et al., TSN 2016).

    Returns a new ``nn.Conv2d`` with ``in_channels`` inputs and ``conv``'s geometry (out channels, kernel,
    stride, padding, bias), whose weight is ``rgb_weight`` (``(out, 3, kh, kw)``; default ``conv.weight``)
    averaged over the input-channel axis and replicated ``in_channels`` times; the bias is copied.
    For a constant input, the new layer's response (minus bias) is ``in_channels / 3`` times the RGB one's.
    """
    w = (conv.weight if rgb_weight is None else rgb_weight).detach()
    if w.dim() != 4:
        raise ValueError(f"cross_modality_init: rgb_weight must be (out, in, kh, kw), got {tuple(w.shape)}")
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                    dilation=conv.dilation, groups=1, bias=conv.bias is not None, padding_mode=conv.padding_mode)
    new = new.to(device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w.mean(dim=1, keepdim=True).expand(-1, in_channels, -1, -1))
        if conv.bias is not None:
            new.bias.copy_(conv.bias.detach())
    return new


def _first_conv(model: nn.Module) -> tuple[nn.Module, str, nn.Conv2d]:
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            parent_name, _, attr = name.rpartition(".")
            return model.get_submodule(parent_name) if parent_name else model, attr, m
    raise ValueError(f"{type(model).__name__} has no nn.Conv2d layer")


def resnet(depth: int = 18, in_channels: int = 3, num_classes: int | Sequence[int] = 101,
           pretrained: bool | str = False, dropout: float = 0.0) -> StreamNet | MultiTaskNet:
    """A torchvision ResNet-18/50 stream, trunk = everything up to global pooling (feature_dim 512 / 2048).

    ``pretrained=True`` loads ImageNet weights (``ResNet18_Weights.IMAGENET1K_V1`` /
    ``ResNet50_Weights.IMAGENET1K_V1``; a string names other torchvision weights, e.g.
    ``"ResNet50_Weights.IMAGENET1K_V2"``) — this downloads them unless cached, and inputs must then be normalised
    with ImageNet's mean/std. With ``in_channels != 3`` the first layer is cross-modality initialised from the
    pretrained RGB one, or freshly He-initialised when not pretrained. ``dropout`` acts before the head(s).
    A sequence ``num_classes`` gives a :class:`MultiTaskNet`.
    """
    import torchvision

    builders = {18: (torchvision.models.resnet18, "ResNet18_Weights.IMAGENET1K_V1"),
                50: (torchvision.models.resnet50, "ResNet50_Weights.IMAGENET1K_V1")}
    if depth not in builders:
        raise ValueError(f"resnet: depth must be 18 or 50, got {depth}")
    fn, default_weights = builders[depth]
    weights = None
    if pretrained:
        name = default_weights if pretrained is True else str(pretrained)
        weights = torchvision.models.get_weight(name)
    trunk = fn(weights=weights)
    feature_dim = trunk.fc.in_features
    trunk.fc = nn.Identity()
    if in_channels != 3:
        if weights is not None:
            trunk.conv1 = cross_modality_init(trunk.conv1, trunk.conv1.weight, in_channels)
        else:
            trunk.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(trunk.conv1.weight, mode="fan_out", nonlinearity="relu")
    if isinstance(num_classes, int):
        return StreamNet(trunk, feature_dim, num_classes, dropout)
    return MultiTaskNet(trunk, feature_dim, num_classes, dropout)


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The classifier parameters: ``model.head`` (:class:`StreamNet`) or ``model.heads`` (:class:`MultiTaskNet`)."""
    if hasattr(model, "heads"):
        return [p for p in model.heads.parameters()]
    if hasattr(model, "head"):
        return [p for p in model.head.parameters()]
    raise ValueError(f"{type(model).__name__} has no .head or .heads (build it with this module's builders)")


def set_finetune_mode(model: nn.Module, mode: str = "all") -> list[nn.Parameter]:
    """Table 1a's training settings for a (pre-trained) net.

    ``"all"``: every parameter trains (fine-tuning). ``"last"``: only the classifier head(s) train; the trunk's
    parameters get ``requires_grad=False`` and its batch-norm layers (ResNet) stay in eval mode, while dropout
    stays active. Returns the trainable parameters, to hand to the optimiser.
    """
    if mode not in ("all", "last"):
        raise ValueError(f"set_finetune_mode: mode must be 'all' or 'last', got {mode!r}")
    heads = head_parameters(model)
    head_ids = {id(p) for p in heads}
    for p in model.parameters():
        p.requires_grad_(mode == "all" or id(p) in head_ids)
    if isinstance(model, _TrunkHeadNet):
        model.trunk_frozen = mode == "last"
        model.train(model.training)
    return [p for p in model.parameters() if p.requires_grad]


def build_model(arch: str = "cnn_m_2048", in_channels: int = 3, num_classes: int | Sequence[int] = 101,
                dropout: float = 0.5, width: float = 1.0, input_size: int | Sequence[int] = 224,
                conv2_norm: bool = True, pretrained: bool | str = False) -> StreamNet | MultiTaskNet:
    """The one entry point for the trainer's config.

    ``arch``: ``"cnn_m_2048"`` (paper), ``"resnet18"`` or ``"resnet50"``. A sequence ``num_classes`` with more
    than one element builds a multitask net (§4). For ResNets, ``input_size`` and ``conv2_norm`` don't apply
    (global pooling takes any size) and ``width`` must be 1. CNN-M has no bundled ImageNet weights:
    ``pretrained`` is refused there (load converted Caffe weights with ``load_state_dict`` yourself).
    """
    multi = not isinstance(num_classes, int)
    if multi:
        num_classes = [int(c) for c in num_classes]
        if len(num_classes) == 1:
            num_classes, multi = num_classes[0], False
    if arch == "cnn_m_2048":
        if pretrained:
            raise ValueError("build_model: no ImageNet weights are bundled for cnn_m_2048; train a net on another "
                             "dataset and load its state_dict, or use arch='resnet18'/'resnet50' with pretrained")
        if multi:
            return cnn_m_2048_multitask(in_channels, num_classes, dropout, width, conv2_norm, input_size)
        return cnn_m_2048(in_channels, num_classes, dropout, width, conv2_norm, input_size=input_size)
    if arch in ("resnet18", "resnet50"):
        if width != 1.0:
            raise ValueError(f"build_model: width={width} applies to cnn_m_2048 only, not {arch}")
        return resnet(int(arch[6:]), in_channels, num_classes, pretrained, dropout)
    raise ValueError(f"build_model: unknown arch {arch!r}; use 'cnn_m_2048', 'resnet18' or 'resnet50'")


def build_model_for(cfg, num_classes: Sequence[int] | int) -> StreamNet | MultiTaskNet:
    """The stream net a run config (a :class:`~twostream_lib.config.TrainConfig`) asks for (:func:`build_model`
    with ``cfg``'s arch, input channels, dropout,
    width, crop size, conv2 LRN and pre-training); several class counts = one head per dataset (§4)."""
    nc = [int(num_classes)] if isinstance(num_classes, int) else [int(c) for c in num_classes]
    return build_model(arch=cfg.arch, in_channels=cfg.in_channels, num_classes=nc[0] if len(nc) == 1 else nc,
                       dropout=cfg.dropout, width=cfg.width, input_size=cfg.crop_size,
                       conv2_norm=cfg.use_conv2_norm, pretrained=cfg.pretrained)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def layer_table(model: nn.Module, input_size: int | Sequence[int] = 224, in_channels: int = 3) -> list[dict]:
    """One row per leaf layer, in execution order, for the book's layer table.

    Runs one dummy input ``(1, in_channels, H, W)`` through ``model`` in eval mode. Each row:
    ``{"name": "trunk.features.conv1", "type": "Conv2d", "output": (96, 109, 109), "params": 14208}``
    (output shape without the batch axis; params of that layer alone).
    """
    h, w = _pair(input_size)
    rows: list[dict] = []
    hooks = []

    def hook_for(name: str, mod: nn.Module):
        def hook(_m, _inp, out):
            if isinstance(out, torch.Tensor):
                rows.append({"name": name, "type": type(mod).__name__, "output": tuple(out.shape[1:]),
                             "params": sum(p.numel() for p in mod.parameters(recurse=False))})
        return hook

    for name, mod in model.named_modules():
        if name and not list(mod.children()) and not isinstance(mod, nn.Identity):
            hooks.append(mod.register_forward_hook(hook_for(name, mod)))
    was_training = model.training
    try:
        model.eval()
        p = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros(1, in_channels, h, w, device=p.device, dtype=p.dtype))
    finally:
        for hk in hooks:
            hk.remove()
        model.train(was_training)
    return rows
