"""MTL-NAS data and gate search: MultiMNIST and .npz tasks with fixed splits, the relaxed-Bernoulli gates,
minimum entropy, the expected-latency hinge, and resumable real torch training at tiny sizes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hwnat.errors import BadInputError
from hwnat.mtl.search import (
    SearchSettings,
    evaluate,
    expected_latency_ms,
    gate_entropy,
    latency_penalty,
    load_checkpoint,
    relaxed_bernoulli,
    save_checkpoint,
    temperature,
    train,
    weight_lr,
)
from hwnat.mtl.tasks import load_npz, load_task
from hwnat.spaces import get_space


def tiny_npz(path, n=160, k=2, side=8, seed=0):
    """Tasks a pooled conv net learns in a few steps: task 0 = bright or dark, task 1 = a zero-mean
    checkerboard texture or none, task 2+ = the texture with another period (independent labels)."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, side, side)).astype(np.float32) * 0.1
    ii, jj = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    labels = {}
    for t in range(k):
        y = rng.integers(0, 2, n)
        if t == 0:
            pattern = np.full((side, side), 0.5, dtype=np.float32)
        else:
            pattern = (0.3 * np.where(((ii + jj) // t) % 2 == 0, 1.0, -1.0)).astype(np.float32)
        x += y[:, None, None] * pattern
        labels[f"task{t}"] = y
    np.savez(path, x=x, **labels)
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny nets on a shared 2-core machine: one intra-op thread avoids spin-wait contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    p = tiny_npz(tmp_path_factory.mktemp("npz") / "tiny.npz")
    data = load_npz(p)
    space = get_space("mtl-vgg", widths=(4, 8), in_shape=data.in_shape, classes=data.classes)
    return data, space


# ---- data ------------------------------------------------------------------------------------------

def test_multimnist_is_two_digits_with_fixed_disjoint_splits():
    a = load_task("multimnist", seed=3, n_train=40, n_test=20, resolution=20)
    b = load_task("multimnist", seed=3, n_train=40, n_test=20, resolution=20)
    c = load_task("multimnist", seed=4, n_train=40, n_test=20, resolution=20)
    assert a.x.shape == (60, 1, 20, 20) and a.x.dtype == np.float32 and a.in_shape == (1, 20, 20)
    assert a.tasks == 2 and a.classes == (10, 10) and a.task_names == ("left", "right")
    assert 0.0 <= a.x.min() and a.x.max() <= 1.0 + 1e-6
    np.testing.assert_array_equal(a.x, b.x)
    assert all((la == lb).all() for la, lb in zip(a.labels, b.labels, strict=True))
    assert not np.array_equal(a.x, c.x)
    sizes = {k: len(v) for k, v in a.splits.items()}
    assert sizes == {"weight": 20, "arch": 20, "test": 20}
    allrows = np.concatenate(list(a.splits.values()))
    assert len(set(allrows.tolist())) == 60
    rec = a.record()
    assert rec["recipe"] == {"task": "multimnist", "seed": 3, "n_train": 40, "n_test": 20, "resolution": 20}
    assert rec["splits"]["test"]["rows"] == a.splits["test"].tolist()
    assert rec["splits"]["weight"]["sha256"] != rec["splits"]["arch"]["sha256"]
    # the left digit dominates the left half of the image, the right digit the right half: their
    # labels differ in a fair share of images, so the two tasks are different tasks
    assert (a.labels[0] != a.labels[1]).mean() > 0.5


def test_npz_task_loads_k_tasks_and_records_splits(tmp_path):
    p = tiny_npz(tmp_path / "three.npz", n=50, k=3)
    d = load_task(str(p))
    assert d.tasks == 3 and d.task_names == ("task0", "task1", "task2") and d.classes == (2, 2, 2)
    assert d.in_shape == (1, 8, 8)
    assert sorted(np.concatenate(list(d.splits.values())).tolist()) == list(range(50))
    assert len(d.splits["test"]) == 10
    d2 = load_task(str(p))
    assert all((d.splits[k] == d2.splits[k]).all() for k in d.splits)


def test_npz_uint8_images_are_scaled(tmp_path):
    x = np.full((10, 1, 4, 4), 255, dtype=np.uint8)
    np.savez(tmp_path / "u8.npz", x=x, a=np.arange(10) % 2, b=np.arange(10) % 3)
    d = load_npz(tmp_path / "u8.npz")
    assert d.x.max() == pytest.approx(1.0) and d.classes == (2, 3)


@pytest.mark.parametrize("arrays, match", [
    ({"x": np.zeros((10, 4, 4)), "a": np.zeros(10, int), "b": np.zeros(9, int)}, r"'b' has shape \(9,\)"),
    ({"x": np.zeros((10, 4, 4)), "a": np.zeros(10, int)}, "K >= 2"),
    ({"x": np.zeros((10, 4, 4)), "a": np.zeros(10, int), "b": np.r_[np.zeros(9), np.nan]}, "missing or invalid"),
    ({"x": np.zeros((10, 4, 4)), "a": np.zeros(10, int), "b": -np.ones(10, int)}, "missing or invalid"),
    ({"a": np.zeros(10, int), "b": np.zeros(10, int)}, "no array named 'x'"),
    ({"x": np.zeros(10), "a": np.zeros(10, int), "b": np.zeros(10, int)}, "expected .N, H, W."),
])
def test_bad_npz_is_refused_with_the_array_named(tmp_path, arrays, match):
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(BadInputError, match=match):
        load_task(str(p))


def test_unknown_task_and_unreadable_npz(tmp_path):
    with pytest.raises(BadInputError, match="multimnist"):
        load_task("cifar")
    p = tmp_path / "junk.npz"
    p.write_bytes(b"not a zip")
    with pytest.raises(BadInputError, match="junk.npz"):
        load_task(str(p))


# ---- gates, entropy, latency term --------------------------------------------------------------------

def test_relaxed_bernoulli_sharpens_as_temperature_falls_and_keeps_the_mean():
    alpha = torch.full((20000,), 0.8)
    g = torch.Generator().manual_seed(0)
    hot, cold = relaxed_bernoulli(alpha, 1.0, g), relaxed_bernoulli(alpha, 0.05, g)
    p = 1 / (1 + math.exp(-0.8))
    near = lambda s: float(((s < 0.05) | (s > 0.95)).float().mean())  # noqa: E731
    assert near(cold) > 0.9 > near(hot)
    assert float((cold > 0.5).float().mean()) == pytest.approx(p, abs=0.02)  # P(on) = sigmoid(alpha)
    s = SearchSettings(tau_start=2.0, tau_end=0.1)
    assert temperature(s, 0, 10) == pytest.approx(2.0) and temperature(s, 9, 10) == pytest.approx(0.1)
    assert temperature(s, 3, 10) > temperature(s, 4, 10)


def test_entropy_is_zero_at_binary_gates_and_largest_at_one_half():
    assert float(gate_entropy(torch.tensor([0.0, 1.0, 1.0]))) < 1e-4
    assert float(gate_entropy(torch.tensor([0.5]))) == pytest.approx(math.log(2), rel=1e-5)
    assert float(gate_entropy(torch.tensor([0.3]))) < float(gate_entropy(torch.tensor([0.45])))


def test_latency_hinge_is_zero_within_budget_and_pushes_costly_gates_hardest():
    cost = torch.tensor([0.1, 0.3, 0.0])
    gates = torch.tensor([0.5, 0.5, 0.5], requires_grad=True)
    assert float(expected_latency_ms(gates.detach(), 1.0, cost)) == pytest.approx(1.2)
    assert float(latency_penalty(gates.detach(), 1.0, cost, 1.3)) == 0.0
    pen = latency_penalty(gates, 1.0, cost, 1.1)
    assert float(pen.detach()) == pytest.approx(0.1 / 1.1)
    pen.backward()
    assert gates.grad[1] > gates.grad[0] > 0 and gates.grad[2] == 0


def test_weight_lr_falls_by_a_cosine_from_lr_to_a_twentieth():
    s = SearchSettings(lr=2e-3)
    lrs = [weight_lr(s, k, 11) for k in range(11)]
    assert lrs[0] == pytest.approx(2e-3) and lrs[-1] == pytest.approx(1e-4)
    assert lrs[5] == pytest.approx((2e-3 + 1e-4) / 2)
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))


def test_settings_are_validated():
    with pytest.raises(BadInputError, match="epochs"):
        SearchSettings(epochs=0)
    with pytest.raises(BadInputError, match="tau_end"):
        SearchSettings(tau_end=0)


# ---- real training at tiny sizes ---------------------------------------------------------------------

def _search(space, data, settings, **kw):
    torch.manual_seed(settings.seed)
    return train(space.build("all"), data, settings, "search", n_edges=len(space.edges()), **kw)


def test_fixed_training_learns_the_tiny_tasks(tiny):
    data, space = tiny
    torch.manual_seed(0)
    net = space.build_backbones()
    before = evaluate(net, data)
    run = train(net, data, SearchSettings(epochs=6, batch_size=16, lr=1e-2))
    after = evaluate(net, data)
    assert len(run.losses) == 6 and run.losses[-1] < run.losses[0]
    assert min(after) >= 0.8 and np.mean(after) > np.mean(before)


def test_minimum_entropy_drives_gates_to_zero_or_one(tiny):
    data, space = tiny
    base = dict(epochs=3, batch_size=8, arch_lr=0.2, alpha_init=0.2, seed=1)
    plain = _search(space, data, SearchSettings(entropy_weight=0.0, **base))
    sharp = _search(space, data, SearchSettings(entropy_weight=3.0, **base))
    near = lambda g: float(np.mean(np.minimum(g, 1 - g) <= 0.05))  # noqa: E731
    assert near(sharp.gates) >= 0.95
    assert near(sharp.gates) > near(plain.gates)
    assert len(sharp.gate_history) == 1 + 3 * SearchSettings().records_per_epoch
    assert sharp.history_epochs[0] == 0.0 and sharp.history_epochs[-1] == pytest.approx(3.0)
    np.testing.assert_allclose(sharp.gate_history[-1], sharp.gates, atol=1e-6)


def test_latency_term_closes_gates_of_costly_edges(tiny):
    data, space = tiny
    n = len(space.edges())
    cost = np.linspace(0.05, 0.5, n)
    base = dict(epochs=2, batch_size=16, arch_lr=0.1, entropy_weight=0.0, latency_weight=20.0, seed=2)
    free = _search(space, data, SearchSettings(**base))
    tight = _search(space, data, SearchSettings(**base), costs=(1.0, cost), budget_ms=1.0 + 0.1 * cost.sum())
    assert (tight.gates < free.gates).all()
    e_free = 1.0 + (free.gates * cost).sum()
    e_tight = 1.0 + (tight.gates * cost).sum()
    assert e_tight < e_free
    with pytest.raises(BadInputError, match="per-edge costs"):
        _search(space, data, SearchSettings(**base), budget_ms=1.0)


def test_search_resumes_after_interruption_to_the_same_result(tiny, tmp_path):
    data, space = tiny
    s = SearchSettings(epochs=3, batch_size=16, seed=5)
    ref = _search(space, data, s, checkpoint=tmp_path / "ref.pt")

    steps = math.ceil(len(data.splits["weight"]) / s.batch_size)

    def stop_in_epoch_two(done, total, label):
        if done == steps + 2:
            raise KeyboardInterrupt

    ck = tmp_path / "cut.pt"
    with pytest.raises(KeyboardInterrupt):
        _search(space, data, s, checkpoint=ck, progress=stop_in_epoch_two)
    assert load_checkpoint(ck)["epoch"] == 1
    resumed = _search(space, data, s, checkpoint=ck)
    np.testing.assert_allclose(resumed.alpha, ref.alpha, atol=1e-5)
    np.testing.assert_allclose(resumed.gate_history, ref.gate_history, atol=1e-5)
    for k, v in ref.net.state_dict().items():
        torch.testing.assert_close(resumed.net.state_dict()[k], v, atol=1e-5, rtol=1e-4)
    # a finished checkpoint resumes to the end without training
    again = _search(space, data, s, checkpoint=ck)
    np.testing.assert_allclose(again.alpha, ref.alpha, atol=1e-6)
    # another run's checkpoint is refused
    with pytest.raises(BadInputError, match="checkpoint of another run"):
        _search(space, data, SearchSettings(epochs=3, batch_size=16, seed=6), checkpoint=ck)


def test_checkpoints_load_weights_only(tmp_path):
    p = save_checkpoint(tmp_path / "ok.pt", {"a": torch.ones(2), "b": [1.0, 2.0], "c": "x"})
    assert load_checkpoint(p)["c"] == "x"

    class Evil:
        def __reduce__(self):
            return (print, ("pickle code ran",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(BadInputError, match="evil.pt"):
        load_checkpoint(tmp_path / "evil.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(BadInputError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(BadInputError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
