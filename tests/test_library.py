"""Libraries of known devices: what ships (`hwnat predictor library list`), `predictor fit` using the shipped
library by default (the target's own column left out), and the cache of fitted library models."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from _hw import published, run_cli

import hwnat.latency.library as L
from hwnat.errors import BadInputError

TARGET = "gold_6240"
OTHERS = ["silver_4210r", "pixel3"]


def test_library_list_shows_what_ships():
    r = run_cli(["predictor", "library", "list", "--json"])
    assert r.exit_code == 0, r.output
    listed = {d["space"]: d for d in json.loads(r.stdout)}
    assert sorted(listed) == ["fbnet", "nasbench201", "ofa-mbv3"]
    for space, d in listed.items():
        df = pd.read_csv(published(space))
        assert d["devices"] == [c for c in df.columns if c != "arch"]
        assert d["rows"] == len(df) and d["file"] == str(published(space))
    text = run_cli(["predictor", "library", "list"])
    assert text.exit_code == 0 and "15625 rows" in text.stdout and "titan_rtx_32" in text.stdout


def test_read_library_defaults_to_the_shipped_dataset_without_the_target():
    data = L.read_library("fbnet", target="pixel3")
    df = pd.read_csv(published("fbnet"))
    assert data.source == str(published("fbnet"))
    assert data.devices == [c for c in df.columns if c not in ("arch", "pixel3")]
    assert data.left_out == ("pixel3",) and data.latency_ms.shape == (5000, len(data.devices))
    assert data.archs == df["arch"].tolist()
    assert (data.latency_ms == df[data.devices].to_numpy()).all()
    with pytest.raises(BadInputError, match="no latency dataset"):
        L.read_library("mtl-nyu")


@pytest.fixture()
def small_shipped(tmp_path, monkeypatch):
    """The shipped fbnet dataset cut to 300 rows and 3 devices (real values), standing in for the shipped
    file, and an empty cache directory."""
    df = pd.read_csv(published("fbnet"))
    cut = tmp_path / "fbnet.csv.gz"
    df.iloc[:300][["arch", TARGET, *OTHERS]].to_csv(cut, index=False)
    monkeypatch.setattr(L, "latency_dataset", lambda space: cut)
    monkeypatch.setenv("HWNAT_CACHE", str(tmp_path / "cache"))
    train = tmp_path / "train.csv"
    df.iloc[1000:1010][["arch", TARGET]].to_csv(train, index=False)
    return tmp_path, train


def _fit(tmp, train, *extra):
    out = tmp / f"model{len(list(tmp.glob('model*.json')))}.json"
    r = run_cli(["predictor", "fit", "--space", "fbnet", "--data", train, "--target", TARGET, "--out", out,
                 "--threads", "1", "--json", *extra])
    return r, out


def test_fit_uses_the_shipped_library_by_default_and_caches_it(small_shipped, monkeypatch):
    tmp, train = small_shipped
    r, out = _fit(tmp, train)
    assert r.exit_code == 0, r.output
    assert "(shipped)" in r.stderr and f"left out: {TARGET}" in r.stderr
    model = json.loads(out.read_text())
    assert set(model["library"]["devices"]) <= set(OTHERS) and model["library"]["devices"]
    cached = list((tmp / "cache" / "libraries").glob("fbnet-*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text())["library"]["devices"] == OTHERS

    # the same library again: read from the cache, not fitted
    def no_fit(*a, **k):
        raise AssertionError("the library was fitted again")

    monkeypatch.setattr("hwnat.latency.transfer.Library.fit", no_fit)
    r2, out2 = _fit(tmp, train)
    assert r2.exit_code == 0, r2.output
    assert json.loads(out2.read_text())["library"] == model["library"]
    # other data is another key: fitted (here: refused by the stand-in), never the stale file
    r3, _ = _fit(tmp, train, "--seed", "1")
    assert r3.exit_code != 0 and "fitted again" in str(r3.exception)


def test_no_library_and_both_options(small_shipped):
    tmp, train = small_shipped
    r, out = _fit(tmp, train, "--no-library")
    assert r.exit_code == 0, r.output
    assert not json.loads(out.read_text()).get("library") and "library" not in r.stderr
    r, _ = _fit(tmp, train, "--no-library", "--library", published("fbnet"))
    assert r.exit_code == 2 and "exclude each other" in r.output


def test_unreadable_cache_is_refitted(small_shipped):
    tmp, train = small_shipped
    assert _fit(tmp, train)[0].exit_code == 0
    (cached,) = (tmp / "cache" / "libraries").glob("fbnet-*.json")
    cached.write_text("{not json")
    r, out = _fit(tmp, train)
    assert r.exit_code == 0, r.output
    assert json.loads(cached.read_text())["library"]["devices"] == OTHERS
