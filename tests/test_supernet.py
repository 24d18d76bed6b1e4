"""OFA supernet: extracted subnet == space.build(arch) (outputs and ONNX graph), training, resume, files."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from hwnat.errors import BadInputError
from hwnat.export.onnx import export_onnx
from hwnat.nn.elastic import ElasticMBConv
from hwnat.search.supernet import OFASupernet, SupernetAccuracy, load_checkpoint, proxy_px
from hwnat.search.tasks import load_task
from hwnat.spaces.ofa_mbv3 import OFAArch, OFAMobileNetV3Space

torch.set_num_threads(1)


def _archs(width=1.0):
    rng = np.random.default_rng(7)
    sp = OFAMobileNetV3Space(widths=(width,), classes=5)
    net_lg = OFAArch((7,) * 20, (6,) * 20, (4,) * 5, 256, width)
    net_sm = OFAArch((3,) * 20, (3,) * 20, (2,) * 5, 192, width)
    return sp, [net_lg, net_sm] + sp.sample(rng, 2)


def _trained_a_little(net):
    """Move every weight and BN statistic away from its initial value, so slicing errors show."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in list(net.parameters()) + [b for b in net.buffers() if b.dtype.is_floating_point]:
            t.add_(0.1 * torch.randn(t.shape, generator=g))
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.abs_().add_(0.5)
    return net


@pytest.mark.parametrize("width", [1.0, 1.2])
def test_supernet_forward_equals_extract_equals_build(width):
    sp, archs = _archs(width)
    net = _trained_a_little(OFASupernet(width, classes=5)).eval()
    x = torch.randn(2, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    for arch in archs:
        net.set_active(arch)
        sub = net.extract(arch)
        ref = sp.build(arch)
        ref.load_state_dict(sub.state_dict())  # same structure: strict load works
        assert [k for k in ref.state_dict()] == [k for k in sub.state_dict()]
        with torch.no_grad():
            y_net, y_sub, y_ref = net(x), sub(x), ref.eval()(x)
        assert torch.allclose(y_net, y_sub, atol=1e-5, rtol=1e-5)
        assert torch.equal(y_sub, y_ref)
    # different archs really give different functions (the slicing is not a no-op)
    outs = []
    for arch in archs[:2]:
        net.set_active(arch)
        with torch.no_grad():
            outs.append(net(x))
    assert not torch.allclose(outs[0], outs[1])


def test_elastic_kernel_uses_the_transformation_matrices():
    layer = ElasticMBConv(16, 16, 1, "relu", False)
    w7 = layer.depthwise_conv.weight
    mid = layer.mid(3)
    # identity matrices: the 3x3 kernel is the centre crop
    assert torch.equal(layer.kernel(3, mid), w7[:mid, :, 2:5, 2:5])
    with torch.no_grad():
        layer.kernel_5x5.mul_(2.0)
    assert torch.allclose(layer.kernel(5, mid), 2 * w7[:mid, :, 1:6, 1:6])
    assert torch.allclose(layer.kernel(3, mid), 2 * w7[:mid, :, 2:5, 2:5])


def test_residual_layers_start_as_the_identity():
    """Zero-gamma init: before training a residual layer adds nothing, so a deeper subnet computes what
    the shallower one does and extra layers cannot start out hurting it; a layer without a skip does not."""
    x = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    res, plain = ElasticMBConv(16, 16, 1, "relu", False).eval(), ElasticMBConv(16, 24, 2, "relu", False).eval()
    assert res.skip and not plain.skip
    with torch.no_grad():
        assert torch.equal(res(x), x)
        assert plain(x).abs().sum() > 0
    net = OFASupernet(1.0, classes=5).eval()
    shallow = OFAArch((3,) * 20, (3,) * 20, (2,) * 5, 192, 1.0)
    deep = OFAArch((3,) * 20, (3,) * 20, (4,) * 5, 192, 1.0)
    xi = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        net.set_active(shallow)
        y_shallow = net(xi)
        net.set_active(deep)
        assert torch.allclose(net(xi), y_shallow)


def _graph(path):
    m = onnx.load(str(path))
    return [n.op_type for n in m.graph.node], sorted(tuple(i.dims) for i in m.graph.initializer)


def test_extracted_subnet_exports_the_same_onnx_graph_as_build(tmp_path):
    sp, archs = _archs()
    # trained weights: a fresh supernet's residual layers have zero gammas, which the exporter folds away
    net = _trained_a_little(OFASupernet(1.0, classes=5))
    arch = archs[2]
    sub = net.extract(arch)
    ref = sp.build(arch)
    ref.load_state_dict(sub.state_dict())  # the same weights (equal initial tensors export as Identity nodes)
    a = export_onnx(sub, sp.input_shape(arch), tmp_path / "sub.onnx")
    b = export_onnx(ref, sp.input_shape(arch), tmp_path / "ref.onnx")
    assert _graph(a) == _graph(b)
    assert sp.blocks(arch)  # the latency tables' blocks are this same module list
    assert len(sub) == len(sp.blocks(arch))


def _tiny_task(tmp_path, n=16):
    rng = np.random.default_rng(0)
    y = np.arange(n) % 3
    x = rng.random((n, 8, 8)).astype(np.float32) * 0.3
    x[np.arange(n), y * 2, y * 2] += 1.0  # a learnable signal
    np.savez(tmp_path / "tiny.npz", x_train=x, y_train=y, x_val=x[:9], y_val=y[:9])
    return load_task(str(tmp_path / "tiny.npz"), seed=0)


def _source(task, **kw):
    sp = OFAMobileNetV3Space(resolutions=(192, 224), classes=task.classes)
    opts = dict(progress=False, batch_size=8, proxy_scale=0.15, calib_images=16, adapt_steps=2)
    opts.update(kw)
    return sp, SupernetAccuracy(sp, task, **opts)


def test_warm_up_trains_saves_and_resumes_exactly(tmp_path):
    task = _tiny_task(tmp_path)
    sp, acc = _source(task)
    before = {k: v.clone() for k, v in acc.nets["1.0"].state_dict().items()}
    acc.warm_up(2, tmp_path / "straight.pt")
    after = acc.nets["1.0"].state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # training changed weights
    assert acc.epochs_done == {"1.0": 2} and len(acc.timing["epoch_s"]) == 2
    # killed during the second epoch, then the same command again: identical weights
    steps = len(task.y_train) // 8

    def interrupt(done, total, label):
        if done > steps:  # the first step of epoch 2 ran; epoch 1's checkpoint is on disk
            raise KeyboardInterrupt

    _, one = _source(task, progress=interrupt)
    with pytest.raises(KeyboardInterrupt):
        one.warm_up(2, tmp_path / "resumed.pt")
    assert load_checkpoint(tmp_path / "resumed.pt")["epochs_done"] == {"1.0": 1}
    ran = []
    _, two = _source(task, progress=lambda done, total, label: ran.append(done))
    two.warm_up(2, tmp_path / "resumed.pt")
    assert two.epochs_done == {"1.0": 2} and len(ran) == steps  # only the missing epoch ran
    assert len(two.timing["epoch_s"]) == 2  # epoch times travel with the checkpoint
    resumed = two.nets["1.0"].state_dict()
    for k in after:
        assert torch.equal(after[k], resumed[k]), k
    ck = load_checkpoint(tmp_path / "straight.pt")  # weights_only load
    assert ck["epochs_done"] == {"1.0": 2} and ck["classes"] == 3


def test_evaluate_adapt_and_state(tmp_path):
    task = _tiny_task(tmp_path)
    sp, acc = _source(task)
    archs = [sp.format(a) for a in sp.sample(np.random.default_rng(0), 3)]
    accs = acc.evaluate(archs)
    assert accs.shape == (3,) and np.all((accs >= 0) & (accs <= 100))
    # evaluation = extract + BN recalibration + the accuracy of that standalone module
    arch = sp.parse(archs[0])
    assert acc.evaluate_one(arch) == pytest.approx(accs[0])
    w0 = {k: v.clone() for k, v in acc.nets["1.0"].state_dict().items()}
    assert acc.adapt(archs[:2], np.random.default_rng(0)) is True
    assert any(not torch.equal(w0[k], v) for k, v in acc.nets["1.0"].state_dict().items())
    st = acc.state()
    assert st["name"] == "supernet:" + task.name and st["adapted_steps"] == 2
    assert st["proxy_px"] == [proxy_px(192, 0.15), proxy_px(224, 0.15)] and st["evaluated"] == 3
    # the number of validation images each accuracy was measured on is recorded (the default cap is 500)
    assert st["val_images"] == acc.n_val == min(500, len(task.y_val))
    assert _source(task, max_val=3)[1].n_val == 3


def test_save_load_round_trip_and_corrupt_files(tmp_path):
    task = _tiny_task(tmp_path)
    sp, acc = _source(task)
    with torch.no_grad():
        next(acc.nets["1.0"].parameters()).add_(1.0)
    acc.save(tmp_path / "s.pt")
    _, other = _source(task, supernet_path=tmp_path / "s.pt")
    for (k, a), b in zip(acc.nets["1.0"].state_dict().items(), other.nets["1.0"].state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    raw = (tmp_path / "s.pt").read_bytes()
    (tmp_path / "torn.pt").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    for name in ("torn.pt", "junk.pt", "other.pt", "missing.pt"):
        with pytest.raises(BadInputError, match=name):
            _source(task, supernet_path=tmp_path / name)
    # a supernet for another number of classes
    with pytest.raises(BadInputError, match="classes"):
        SupernetAccuracy(OFAMobileNetV3Space(classes=10), load_task("digits"), progress=False,
                         supernet_path=tmp_path / "s.pt")


def test_bad_space_and_width(tmp_path):
    from hwnat.spaces import get_space

    task = _tiny_task(tmp_path)
    with pytest.raises(BadInputError, match="ofa-mbv3"):
        SupernetAccuracy(get_space("nasbench201"), task, progress=False)
    sp, acc = _source(task)
    wide = OFAArch((3,) * 20, (3,) * 20, (2,) * 5, 192, 1.2)
    with pytest.raises(BadInputError, match="width 1.2"):
        acc.evaluate([sp.format(wide)])
