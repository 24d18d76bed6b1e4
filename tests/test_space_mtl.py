"""The mtl-vgg fusion space: encoding, identity-initialised fusion, analytic costs against torch's counter,
multi-output ONNX export, multi-input fusion blocks through export and the cpu device."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from hwnat.errors import BadInputError
from hwnat.spaces import get_space
from hwnat.spaces.mtl import MAX_SPAN, Edge

TINY = {"widths": (4, 8, 8), "in_shape": (1, 12, 12)}


@pytest.fixture(scope="module")
def space():
    return get_space("mtl-vgg", **TINY)


def test_candidate_edges_follow_the_depth_limited_rule():
    sp = get_space("mtl-vgg", tasks=3, widths=(4, 4, 4, 4, 4), in_shape=(1, 8, 8))
    want = {Edge(st, sl, dt, dl) for st, sl, dt, dl in itertools.product(range(3), range(5), range(3), range(5))
            if st != dt and sl <= dl and dl - sl < MAX_SPAN}
    assert set(sp.edges()) == want and len(sp.edges()) == len(want)
    assert sp.edges() == sorted(sp.edges())
    with pytest.raises(BadInputError, match="not a candidate edge"):
        sp.parse("0.0>1.3")  # span 3
    with pytest.raises(BadInputError, match="not a candidate edge"):
        sp.parse("0.2>0.2")  # same task
    with pytest.raises(BadInputError, match="not a candidate edge"):
        sp.parse("0.2>1.1")  # backwards


def test_parse_format_roundtrip_and_forms(space):
    n = len(space.edges())
    assert space.format(space.parse("none")) == "none"
    assert space.encode(space.parse("all")).tolist() == [1] * n
    rng = np.random.default_rng(0)
    for a in space.sample(rng, 20):
        s = space.format(a)
        assert space.format(space.parse(s)) == s
        bits = "".join(str(b) for b in space.encode(a))
        assert space.parse(bits) == a
        assert space.decode(space.encode(a)) == a
    first = space.edges()[0]
    assert space.parse(f"{first}") == space.parse("1" + "0" * (n - 1))


@pytest.mark.parametrize("bad, match", [("0.1>1", "not 'srctask.layer>dsttask.layer'"),
                                        ("0.0>1.0+0.0>1.0", "listed twice"),
                                        ("0101", "bits"), ("x", "srctask")])
def test_parse_rejects_bad_strings(space, bad, match):
    with pytest.raises(BadInputError, match=match):
        space.parse(bad)


@pytest.mark.parametrize("opts, match", [({"tasks": 1}, "at least 2 tasks"), ({"classes": (10,)}, "at least 2"),
                                         ({"tasks": 3, "classes": (2, 2)}, "tasks=3"),
                                         ({"strides": (1, 3, 1, 2)}, "strides"),
                                         ({"widths": (4, 0)}, "widths")])
def test_bad_options(opts, match):
    with pytest.raises(BadInputError, match=match):
        get_space("mtl-vgg", **opts)


def test_identity_init_computes_the_single_task_networks(space):
    """At initialisation (eval mode) the all-edges network equals the backbones without fusion, per task."""
    torch.manual_seed(0)
    fused = space.build(space.parse("all"))
    plain = space.build_backbones()
    # different random backbone weights per build: give the plain network the fused one's weights
    missing, unexpected = plain.load_state_dict(fused.state_dict(), strict=False)
    assert not missing and all(k.startswith("fusions.") for k in unexpected)
    # non-trivial BN statistics in the backbones, so the check is not on an all-identity network
    for m in fused.backbones.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
    plain.load_state_dict(fused.state_dict(), strict=False)
    x = torch.randn(5, *space.in_shape)
    with torch.no_grad():
        a, b = fused(x), plain(x)
        c = fused(x, gates=torch.rand(len(space.edges())))  # any gates: sources are multiplied by zero weights
    for t in range(space.tasks):
        torch.testing.assert_close(a[t], b[t], rtol=0, atol=1e-6)
        torch.testing.assert_close(c[t], b[t], rtol=0, atol=1e-6)
    # and the tasks really differ (independent backbones), so the check above is per task
    assert not torch.allclose(a[0], a[1])


def test_gates_weight_each_edge_source(space):
    """A gate of 0 is the same as the edge being absent, after training-like weight changes."""
    torch.manual_seed(1)
    net = space.build(space.parse("all"))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(3, *space.in_shape)
    kept = np.zeros(len(space.edges()), dtype=bool)
    kept[::2] = True
    g = torch.from_numpy(kept.astype(np.float32))
    with torch.no_grad():
        masked = net(x, gates=g)
        per_sample = net(x, gates=g.expand(3, -1))
        full = net(x)
    for m, p, f in zip(masked, per_sample, full, strict=True):
        torch.testing.assert_close(m, p)
        assert not torch.allclose(m, f)


def test_head_tells_apart_the_same_feature_at_two_positions():
    """MultiMNIST's tasks differ only in where the digit is: a global-average-pooled head could not tell."""
    from hwnat.nn.fusion import Head

    torch.manual_seed(0)
    head = Head((3, 4, 4), 5).eval()
    top_left, bottom_right = torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)
    top_left[0, :, 0, 0], bottom_right[0, :, 3, 3] = 1.0, 1.0
    assert not torch.allclose(head(top_left), head(bottom_right))
    assert head(top_left).shape == (1, 5)


def test_flops_and_params_match_torch_counters(space):
    from torch.utils.flop_counter import FlopCounterMode

    rng = np.random.default_rng(3)
    for a in [space.parse("none"), space.parse("all"), *space.sample(rng, 4)]:
        net = space.build(a)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            net(torch.zeros(space.input_shape(a)))
        assert counter.get_total_flops() == space.flops(a)
        assert sum(p.numel() for p in net.parameters()) == space.params(a)
    g = space.encode_many(space.sample(rng, 5))
    np.testing.assert_allclose(space.flops_many(g) - space.flops_many(np.zeros_like(g)), g @ space.edge_flops())


def test_blocks_cover_every_fusion_subset(space):
    # per (task, layer), the fusion block of the arch has exactly its kept sources as extra inputs
    rng = np.random.default_rng(4)
    for a in space.sample(rng, 5):
        g = space.encode(a)
        fusions = [b for b in space.blocks(a) if b.op == "mtl_fusion"]
        assert len(fusions) == space.tasks * space.layers
        n_src = sorted(len(b.extra_in_shapes) for b in fusions)
        want = sorted(int(g[space.candidates(t, i)].sum()) for t in range(space.tasks) for i in range(space.layers))
        assert n_src == want
    keys = {b.key for b in space.all_blocks()}
    assert {b.key for a in space.sample(rng, 30) for b in space.blocks(a)} <= keys


def test_whole_network_exports_to_onnx_with_one_output_per_task(space, tmp_path):
    import onnx

    from hwnat.export import check_onnx, export_onnx

    a = space.parse("0.0>1.0+1.0>0.2+0.1>1.2")
    net = space.build(a)
    with torch.no_grad():  # move off the identity so the check compares real fusion
        for p in net.fusions.parameters():
            p.add_(0.1)
    path = export_onnx(net, space.input_shape(a), tmp_path / "net.onnx")
    model = onnx.load(str(path))
    assert len(model.graph.input) == 1 and len(model.graph.output) == space.tasks
    assert check_onnx(net, path, space.input_shape(a)) < 1e-4


def test_fusion_block_with_several_inputs_exports_and_checks(space, tmp_path):
    import onnx

    from hwnat.export import check_onnx, export_onnx

    b = space.fusion_block(1, 2, tuple(space.candidates(1, 2)))
    assert len(b.in_shapes) == 1 + len(space.candidates(1, 2)) and "+" in b.key
    m = space.build_block(b)
    shapes = b.batch_input()
    assert shapes == tuple((1, *s) for s in b.in_shapes)
    path = export_onnx(m, shapes, tmp_path / "fusion.onnx")
    assert [tuple(d.dim_value for d in i.type.tensor_type.shape.dim) for i in onnx.load(str(path)).graph.input] \
        == list(shapes)
    check_onnx(m, path, shapes)


@pytest.mark.parametrize("runtime", ["onnxruntime", "torch"])
def test_multi_input_block_is_timed_by_the_local_runtimes(space, tmp_path, runtime):
    from hwnat.devices.device import open_device
    from hwnat.devices.spec import load_device
    from hwnat.latency.profiler import measure_module

    y = tmp_path / "d.yaml"
    y.write_text(f"name: d\ntransport: {{kind: local}}\nruntime: {{kind: {runtime}, threads: 1}}\n"
                 "measure: {warmup_s: 0.0, warmup_runs: 1, rounds: 2, runs: 3,\n"
                 "          unstable_tolerance: 5.0, max_remeasure: 0}\n")
    b = space.fusion_block(0, 2, tuple(space.candidates(0, 2)[:2]))
    with open_device(load_device(str(y))) as dev:
        m = measure_module(dev, space.build_block(b), b.batch_input(), tmp_path, "fusion")
        assert m.median_ms > 0 and sum(len(r) for r in m.rounds_ms) == 6
        if runtime == "onnxruntime":  # one shape for a three-input model file: a clear device error
            from hwnat.errors import DeviceError
            from hwnat.export import export_onnx

            path = export_onnx(space.build_block(b), b.batch_input(), tmp_path / "f.onnx")
            with pytest.raises(DeviceError, match="takes 3 input"):
                dev.measure(str(path), (1, *b.in_shape))


def test_profile_cli_profiles_the_mtl_space_on_cpu(tmp_path):
    """``hwnat profile --space mtl-vgg --device cpu`` works like for every space: every block, the
    fusion ops with their several inputs included, plus end-to-end subnets compared with table sums."""
    from _hw import fast_device, run_cli

    from hwnat.latency.table import LatencyTable

    dev = fast_device(tmp_path)
    out = tmp_path / "mtl.json"
    r = run_cli(["-q", "profile", "--device", dev, "--space", "mtl-vgg", "--out", out, "--subnets", "2"])
    assert r.exit_code == 0, r.output
    assert "table sum vs measured (2 subnets)" in r.stdout
    sp = get_space("mtl-vgg")
    t = LatencyTable.load(out, space="mtl-vgg", device="cpu")
    assert set(t.entries) == {b.key for b in sp.all_blocks()}
    assert any("+" in k for k in t.entries)  # multi-input fusion blocks were measured
    g = sp.encode_many([sp.parse("none"), sp.parse("all")])
    lo, hi = t.sum_many(sp, g)
    assert 0 < lo < hi


@pytest.mark.ssh
def test_multi_input_block_through_the_remote_agent(sshd_device, tmp_path):
    """A fusion block's several inputs travel through the ssh device and the agent's request."""
    from hwnat.devices.device import open_device
    from hwnat.latency.profiler import measure_module

    sp = get_space("mtl-vgg", **TINY)
    b = sp.fusion_block(1, 1, tuple(sp.candidates(1, 1)))
    assert len(b.in_shapes) == 3
    with open_device(str(sshd_device)) as dev:
        m = measure_module(dev, sp.build_block(b), b.batch_input(), tmp_path, "fusion")
    assert m.median_ms > 0 and m.rounds_ms


def test_one_shape_or_several_is_read_alike_by_host_and_agent():
    from hwnat._shapes import as_shapes, one_or_many
    from hwnat.devices.agent.agent_main import input_shapes

    assert as_shapes((1, 3, 8, 8)) == ((1, 3, 8, 8),) and one_or_many(as_shapes((1, 3, 8, 8))) == (1, 3, 8, 8)
    two = [[1, 16, 8, 8], (1, 32, 16, 16)]
    assert as_shapes(two) == ((1, 16, 8, 8), (1, 32, 16, 16)) == one_or_many(two)
    assert input_shapes([1, 3, 8, 8]) == [[1, 3, 8, 8]]
    assert input_shapes([list(s) for s in as_shapes(two)]) == [list(s) for s in as_shapes(two)]
    with pytest.raises(BadInputError, match="input shape"):
        as_shapes(["a", "b"])
