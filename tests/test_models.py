"""CNN-M-2048, multitask heads, ResNet backbones, cross-modality init and fine-tuning modes (twostream_lib.models)."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from twostream_lib.models import (
    CNN_M_MIN_INPUT,
    CrossChannelLRN,
    MultiTaskNet,
    StreamNet,
    build_model,
    cnn_m_2048,
    cnn_m_2048_multitask,
    cnn_m_trunk_size,
    count_parameters,
    cross_modality_init,
    layer_table,
    multitask_loss,
    multitask_losses,
    resnet,
    set_finetune_mode,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def full_spatial():
    """The full-size spatial CNN-M-2048 (~90M parameters): built once for the whole module."""
    torch.manual_seed(0)
    return cnn_m_2048(3, 101)


def _conv(cin, cout, k):
    return cout * cin * k * k + cout


def _fc(fin, fout):
    return fout * fin + fout


def test_full_cnn_m_parameter_count(full_spatial):
    # Independent count from the paper's layer list (Chatfield et al. CNN-M-2048, 224 input -> 6x6x512).
    expected = (_conv(3, 96, 7) + _conv(96, 256, 5) + _conv(256, 512, 3) + _conv(512, 512, 3)
                + _conv(512, 512, 3) + _fc(6 * 6 * 512, 4096) + _fc(4096, 2048) + _fc(2048, 101))
    assert count_parameters(full_spatial) == expected


def test_full_cnn_m_layer_shapes(full_spatial):
    rows = {r["name"].split(".")[-1]: r for r in layer_table(full_spatial, 224, 3)}
    # 224 -conv1-> 109 -pool-> 54 -conv2-> 26 -pool-> 13 -conv3..5-> 13 -pool-> 6
    assert rows["conv1"]["output"] == (96, 109, 109)
    assert rows["pool1"]["output"] == (96, 54, 54)
    assert rows["conv2"]["output"] == (256, 26, 26)
    assert rows["pool2"]["output"] == (256, 13, 13)
    assert rows["conv5"]["output"] == (512, 13, 13)
    assert rows["pool5"]["output"] == (512, 6, 6)
    assert rows["fc6"]["output"] == (4096,) and rows["fc7"]["output"] == (2048,)
    assert rows["head"]["output"] == (101,)
    assert sum(r["params"] for r in rows.values()) == count_parameters(full_spatial)
    assert cnn_m_trunk_size(224) == (6, 6)
    # LRN with Caffe's VGG CNN-M values after conv1 and conv2
    norm = full_spatial.trunk.features.norm1
    assert (norm.size, norm.alpha, norm.beta, norm.k) == (5, 5e-4, 0.75, 2.0)
    assert isinstance(full_spatial.trunk.features.norm2, nn.LocalResponseNorm)


@pytest.mark.parametrize("size,channels", [(5, 24), (5, 3), (4, 8), (1, 6), (7, 64)])
def test_cross_channel_lrn_is_torchs_lrn(size, channels):
    """The nets' LRN (a 1x1 band convolution) gives torch's LocalResponseNorm's output and gradient: window
    placement for odd and even sizes, windows wider than the channels, zero padding at the ends."""
    torch.manual_seed(0)
    kw = dict(size=size, alpha=0.1, beta=0.75, k=1.0)  # a large alpha, so that the window sums matter
    x = (3 * torch.randn(2, channels, 5, 7)).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    y, y_ref = CrossChannelLRN(**kw)(x), nn.LocalResponseNorm(**kw)(x_ref)
    torch.testing.assert_close(y, y_ref)
    w = torch.randn_like(y)
    (y * w).sum().backward()
    (y_ref * w).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)
    assert not torch.allclose(y, x.detach() / kw["k"] ** kw["beta"])  # the neighbours' energy changed the output
    seq = torch.randn(2, channels, 9)  # other ranks: torch's own computation
    torch.testing.assert_close(CrossChannelLRN(**kw)(seq), nn.LocalResponseNorm(**kw)(seq))


def test_trunk_size_arithmetic_matches_the_layers():
    trunk = cnn_m_2048(3, 2, width=0.05, input_size=224).trunk
    for n in list(range(CNN_M_MIN_INPUT, 80)) + [96, 101, 112, 128, 224, 227]:
        out = trunk.features(torch.zeros(1, 3, n, n))
        assert tuple(out.shape[-2:]) == cnn_m_trunk_size(n), n
    with pytest.raises(ValueError, match="too small"):
        cnn_m_trunk_size(CNN_M_MIN_INPUT - 1)
    with pytest.raises(ValueError, match="too small"):
        cnn_m_2048(3, 5, width=0.25, input_size=32)


@pytest.mark.parametrize("in_channels", [3, 20])
@pytest.mark.parametrize("size", [80, 96, (96, 128)])
def test_lab_scale_shapes(in_channels, size):
    m = cnn_m_2048(in_channels, 7, dropout=0.9, width=0.25, conv2_norm=in_channels == 3, input_size=size)
    h, w = (size, size) if isinstance(size, int) else size
    out = m(torch.randn(2, in_channels, h, w))
    assert out.shape == (2, 7)
    f = m.trunk.features
    assert [f.conv1.out_channels, f.conv2.out_channels, f.conv3.out_channels, f.conv4.out_channels,
            f.conv5.out_channels] == [24, 64, 128, 128, 128]
    sh, sw = cnn_m_trunk_size((h, w))
    assert m.trunk.fc6.in_features == 128 * sh * sw
    assert (m.trunk.fc6.out_features, m.trunk.fc7.out_features) == (1024, 512)
    assert m.trunk.feature_dim == 512 and m.trunk(torch.randn(1, in_channels, h, w)).shape == (1, 512)


def test_wrong_input_size_is_refused():
    m = cnn_m_2048(3, 5, width=0.25, input_size=80)
    with pytest.raises(ValueError, match="80"):
        m(torch.randn(1, 3, 96, 96))


def test_temporal_net_has_no_second_lrn():
    spatial = cnn_m_2048(3, 5, width=0.25, input_size=64)
    temporal = cnn_m_2048(20, 5, dropout=0.9, width=0.25, conv2_norm=False, input_size=64)
    lrn = lambda m: [n for n, x in m.named_modules() if isinstance(x, nn.LocalResponseNorm)]
    assert lrn(spatial) == ["trunk.features.norm1", "trunk.features.norm2"]
    assert lrn(temporal) == ["trunk.features.norm1"]
    assert temporal.trunk.features.conv1.in_channels == 20
    assert temporal.trunk.drop6.p == 0.9 and temporal.trunk.drop7.p == 0.9


def test_cross_modality_init():
    torch.manual_seed(1)
    rgb = nn.Conv2d(3, 8, 7, stride=2, padding=3)
    new = cross_modality_init(rgb, rgb.weight, 20)
    assert new.weight.shape == (8, 20, 7, 7)
    assert (new.stride, new.padding) == (rgb.stride, rgb.padding)
    mean = rgb.weight.detach().mean(dim=1)
    for c in range(20):
        assert torch.equal(new.weight[:, c], mean)
    assert torch.equal(new.bias, rgb.bias)
    # a constant input: the response without bias scales by in_channels / 3
    with torch.no_grad():
        y3 = rgb(torch.full((1, 3, 16, 16), 0.7)) - rgb.bias[None, :, None, None]
        y20 = new(torch.full((1, 20, 16, 16), 0.7)) - new.bias[None, :, None, None]
    assert torch.allclose(y20, y3 * 20 / 3, rtol=1e-4, atol=1e-5)
    assert y3.abs().max() > 1e-3  # not trivially zero


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_last_layer_only_trains_only_the_head():
    torch.manual_seed(3)
    m = cnn_m_2048(3, 5, dropout=0.5, width=0.25, input_size=64)
    trainable = set_finetune_mode(m, "last")
    assert {id(p) for p in trainable} == {id(m.head.weight), id(m.head.bias)}
    assert count_parameters(m, trainable_only=True) == 512 * 5 + 5
    before = _params(m)
    opt = torch.optim.SGD(trainable, lr=0.1, momentum=0.9, weight_decay=5e-4)
    m.train()
    loss = F.cross_entropy(m(torch.randn(4, 3, 64, 64)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    opt.step()
    after = _params(m)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed == {"head.weight", "head.bias"}
    assert all(p.grad is None for n, p in m.named_parameters() if not n.startswith("head"))
    # back to fine-tuning everything
    assert len(set_finetune_mode(m, "all")) == len(list(m.parameters()))
    with pytest.raises(ValueError, match="mode"):
        set_finetune_mode(m, "first")


def test_last_layer_only_keeps_resnet_batchnorm_statistics():
    torch.manual_seed(4)
    m = resnet(18, 3, 4)
    set_finetune_mode(m, "last")
    m.train()
    bn = m.trunk.bn1
    assert not bn.training and m.head.training
    mean_before = bn.running_mean.clone()
    m(torch.randn(2, 3, 64, 64))
    assert torch.equal(bn.running_mean, mean_before)
    set_finetune_mode(m, "all")
    m.train()
    assert bn.training


def test_multitask_forward_and_builder():
    m = cnn_m_2048_multitask(20, (6, 4), dropout=0.9, width=0.25, conv2_norm=False, input_size=64)
    assert isinstance(m, MultiTaskNet)
    x = torch.randn(3, 20, 64, 64)
    m.eval()
    outs = m(x)
    assert [o.shape for o in outs] == [(3, 6), (3, 4)]
    assert torch.allclose(m(x, task=1), outs[1])
    with pytest.raises(ValueError, match="task"):
        m(x, task=2)
    trainable = set_finetune_mode(m, "last")
    assert len(trainable) == 4  # two heads, weight + bias each


def test_multitask_loss_is_sum_of_per_task_means():
    torch.manual_seed(5)
    la, lb = torch.randn(5, 6), torch.randn(5, 4)
    labels = torch.tensor([1, 3, 5, 0, 2])
    tasks = torch.tensor([0, 1, 0, 1, 1])
    # by hand: task 0 samples {0, 2} on head 0, task 1 samples {1, 3, 4} on head 1
    lsa, lsb = la.log_softmax(1), lb.log_softmax(1)
    ce0 = -(lsa[0, 1] + lsa[2, 5]) / 2
    ce1 = -(lsb[1, 3] + lsb[3, 0] + lsb[4, 2]) / 3
    assert torch.allclose(multitask_loss([la, lb], labels, tasks), ce0 + ce1)
    parts = multitask_losses([la, lb], labels, tasks)
    assert torch.allclose(parts[0], ce0) and torch.allclose(parts[1], ce1)


def test_multitask_loss_with_absent_task():
    torch.manual_seed(6)
    la = torch.randn(3, 6, requires_grad=True)
    lb = torch.randn(3, 4, requires_grad=True)
    labels, tasks = torch.tensor([1, 2, 3]), torch.tensor([0, 0, 0])
    loss = multitask_loss([la, lb], labels, tasks)
    assert torch.isfinite(loss)
    assert torch.allclose(loss, F.cross_entropy(la, labels))
    assert multitask_losses([la, lb], labels, tasks)[1].item() == 0
    loss.backward()
    assert torch.isfinite(la.grad).all() and la.grad.abs().sum() > 0
    # the absent task's head still takes part in the graph (DDP needs every parameter), with a zero gradient
    assert lb.grad is not None and lb.grad.abs().sum() == 0
    with pytest.raises(ValueError, match="task_ids"):
        multitask_loss([la, lb], labels, torch.tensor([0, 2, 1]))


def test_resnet18_with_flow_input():
    torch.manual_seed(7)
    m = resnet(18, in_channels=20, num_classes=11, dropout=0.5)
    assert m.trunk.conv1.in_channels == 20 and m.feature_dim == 512
    m.eval()
    assert m(torch.randn(2, 20, 96, 96)).shape == (2, 11)
    mt = resnet(18, in_channels=3, num_classes=[5, 3])
    assert [o.shape for o in mt.eval()(torch.randn(1, 3, 64, 64))] == [(1, 5), (1, 3)]
    with pytest.raises(ValueError, match="depth"):
        resnet(34)


def test_build_model_dispatch():
    common = dict(dropout=0.5, width=0.25, input_size=64)
    assert isinstance(build_model("cnn_m_2048", 3, 5, **common), StreamNet)
    assert isinstance(build_model("cnn_m_2048", 3, [5], **common), StreamNet)
    mt = build_model("cnn_m_2048", 20, [5, 3], conv2_norm=False, **common)
    assert isinstance(mt, MultiTaskNet) and mt.num_classes == [5, 3]
    assert not hasattr(mt.trunk.features, "norm2")
    assert isinstance(build_model("resnet18", 20, 5), StreamNet)
    with pytest.raises(ValueError, match="pretrained|weights"):
        build_model("cnn_m_2048", 3, 5, pretrained=True, **common)
    with pytest.raises(ValueError, match="width"):
        build_model("resnet18", 3, 5, width=0.5)
    with pytest.raises(ValueError, match="arch"):
        build_model("alexnet", 3, 5)


def test_resnet_pretrained_flow_input_uses_cross_modality_init(monkeypatch):
    """The pretrained path, without downloading: torchvision's builder is replaced by one with known weights."""
    import torchvision

    real = torchvision.models.resnet18
    asked = {}

    def fake_resnet18(weights=None):
        asked["weights"] = weights
        net = real(weights=None)
        torch.manual_seed(8)
        nn.init.normal_(net.conv1.weight)
        fake_resnet18.rgb = net.conv1.weight.detach().clone()
        return net

    monkeypatch.setattr(torchvision.models, "resnet18", fake_resnet18)
    m = resnet(18, in_channels=20, num_classes=5, pretrained=True)
    assert str(asked["weights"]) == "ResNet18_Weights.IMAGENET1K_V1"
    w = m.trunk.conv1.weight
    assert w.shape == (64, 20, 7, 7)
    assert torch.equal(w, fake_resnet18.rgb.mean(dim=1, keepdim=True).expand(-1, 20, -1, -1))


def test_multitask_loss_divides_by_the_given_task_counts():
    """Data-parallel training passes the global batch's counts: the processes' losses add up to one process's."""
    torch.manual_seed(8)
    la, lb = torch.randn(6, 4), torch.randn(6, 3)
    labels, tasks = torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([0, 0, 1, 0, 0, 0])
    whole = multitask_loss([la, lb], labels, tasks)
    counts = torch.bincount(tasks, minlength=2)
    halves = [multitask_loss([la[s], lb[s]], labels[s], tasks[s], task_counts=counts)
              for s in (slice(0, 3), slice(3, 6))]  # the second half holds no sample of task 1
    assert torch.allclose(halves[0] + halves[1], whole)
