"""Checkpoint loading (.pth, detectron2 .pkl, .safetensors), key reports, strict/lenient, atomic save."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from detcore.archs import KeyReport, load_checkpoint, load_state_dict_file, save_checkpoint


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g).to(v.dtype) for k, v in Tiny().state_dict().items()}


def _assert_loaded(model, state):
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_pth_plain_and_wrapped(tmp_path):
    state = _state()
    torch.save(state, tmp_path / "a.pth")
    torch.save({"model": state, "iteration": 5}, tmp_path / "b.pth")
    for name in ("a.pth", "b.pth"):
        m = Tiny()
        report = load_checkpoint(m, tmp_path / name)
        assert report == KeyReport() and report.ok
        _assert_loaded(m, state)


def test_pkl_detectron2_zoo_format(tmp_path):
    state = _state(1)
    zoo = {
        "model": {k: v.numpy() for k, v in state.items()},
        "__author__": "test",
        "matching_heuristics": True,
    }
    with open(tmp_path / "m.pkl", "wb") as f:
        pickle.dump(zoo, f)
    m = Tiny()
    assert load_checkpoint(m, tmp_path / "m.pkl").ok
    _assert_loaded(m, state)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pkl_refuses_arbitrary_objects(tmp_path):
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"model": {"conv.weight": _Evil()}}, f)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        load_checkpoint(Tiny(), tmp_path / "evil.pkl")


def test_pth_refuses_arbitrary_objects(tmp_path):
    torch.save({"model": {"x": np.float64}}, tmp_path / "evil.pth")
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(Tiny(), tmp_path / "evil.pth")


def test_safetensors_save_load_round_trip(tmp_path):
    src = Tiny()
    src.load_state_dict(_state(2))
    save_checkpoint(src, tmp_path / "w.safetensors")
    m = Tiny()
    assert load_checkpoint(m, tmp_path / "w.safetensors").ok
    _assert_loaded(m, _state(2))
    assert sorted(os.listdir(tmp_path)) == ["w.safetensors"]  # no temp file left


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    save_checkpoint(Tiny(), path)
    before = path.read_bytes()

    import safetensors.torch

    def failing_save(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(Tiny(), path)
    assert path.read_bytes() == before  # the old file is intact
    assert sorted(os.listdir(tmp_path)) == ["w.safetensors"]  # and the temp file is gone


def test_save_handles_shared_and_noncontiguous_tensors(tmp_path):
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(3, 3)
            self.b = self.a  # tied
            self.register_buffer("t", torch.arange(6.0).view(2, 3).t())

    save_checkpoint(Shared(), tmp_path / "s.safetensors")
    loaded = load_state_dict_file(tmp_path / "s.safetensors")
    assert set(loaded) == {"a.weight", "a.bias", "b.weight", "b.bias", "t"}
    assert torch.equal(loaded["t"], torch.arange(6.0).view(2, 3).t())


def test_mismatch_report_strict_and_lenient(tmp_path):
    state = _state(3)
    state.pop("fc.bias")
    state["extra.weight"] = torch.zeros(2)
    state["conv.weight"] = torch.zeros(4, 3, 5, 5)
    torch.save(state, tmp_path / "m.pth")
    m = Tiny()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(ValueError) as e:
        load_checkpoint(m, tmp_path / "m.pth", strict=True)
    msg = str(e.value)
    assert "fc.bias" in msg and "extra.weight" in msg and "conv.weight" in msg and "[4, 3, 5, 5]" in msg
    for k, v in m.state_dict().items():  # strict failure loads nothing
        assert torch.equal(v, before[k]), k
    report = load_checkpoint(m, tmp_path / "m.pth", strict=False)
    assert report.missing == ["fc.bias"]
    assert report.unexpected == ["extra.weight"]
    assert report.shape_mismatched == [("conv.weight", (4, 3, 5, 5), (4, 3, 3, 3))]
    assert not report.ok
    sd = m.state_dict()
    assert torch.equal(sd["fc.weight"], state["fc.weight"])  # matching keys loaded
    assert torch.equal(sd["conv.weight"], before["conv.weight"])  # mismatched kept
    assert torch.equal(sd["fc.bias"], before["fc.bias"])


def test_dtype_converted_to_model_dtype(tmp_path):
    state = {k: v.double() if v.is_floating_point() else v for k, v in _state(4).items()}
    torch.save(state, tmp_path / "d.pth")
    m = Tiny()
    load_checkpoint(m, tmp_path / "d.pth")
    assert m.conv.weight.dtype == torch.float32
    torch.testing.assert_close(m.conv.weight.data, state["conv.weight"].float())


def test_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(Tiny(), tmp_path / "none.pth")
    (tmp_path / "x.ckpt").write_bytes(b"")
    with pytest.raises(ValueError, match="unknown format"):
        load_checkpoint(Tiny(), tmp_path / "x.ckpt")
    torch.save([1, 2], tmp_path / "l.pth")
    with pytest.raises(ValueError, match="dict name -> tensor"):
        load_checkpoint(Tiny(), tmp_path / "l.pth")
    torch.save({"conv.weight": "abc"}, tmp_path / "s.pth")
    with pytest.raises(ValueError, match="conv.weight"):
        load_checkpoint(Tiny(), tmp_path / "s.pth")
    with pytest.raises(TypeError, match="nn.Module"):
        load_checkpoint({}, tmp_path / "s.pth")
