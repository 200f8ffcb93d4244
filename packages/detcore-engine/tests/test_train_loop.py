"""SimpleTrainer / AMPTrainer with hooks on a toy regression model: loss decreases, metrics.jsonl, atomic
checkpoints, non-finite loss handling, evaluation and writer hooks."""

from __future__ import annotations

import importlib.util
import io
import json
import os

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from detcore.engine.checkpoint import Checkpointer
from detcore.engine.data.samplers import TrainingSampler
from detcore.engine.launch import all_gather, get_rank, get_world_size, launch
from detcore.engine.train import (
    AMPTrainer,
    CommonMetricPrinter,
    EvalHook,
    EventStorage,
    HookBase,
    IterationTimer,
    JSONWriter,
    LRScheduler,
    PeriodicCheckpointer,
    PeriodicWriter,
    SimpleTrainer,
    TensorboardXWriter,
    build_lr_scheduler,
    build_optimizer,
)


def _data(n=64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.7 + 0.01 * torch.randn(n, 1, generator=g)
    return x, y


class _Toy(nn.Module):
    """Linear regression returning two losses; ``nan_at`` makes a third loss NaN at that call."""

    def __init__(self, nan_at: int | None = None):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4, 1)
        self.calls = 0
        self.nan_at = nan_at

    def forward(self, batch):
        x, y = batch
        pred = self.fc(x)
        out = {"loss_mse": ((pred.float() - y) ** 2).mean(), "loss_l1": 0.1 * (pred.float() - y).abs().mean()}
        if self.nan_at is not None:
            out["loss_bad"] = torch.tensor(float("nan") if self.calls == self.nan_at else 0.0)
        self.calls += 1
        return out


def _setup(tmp_path, max_iter, *, model=None, period=5, trainer_cls=SimpleTrainer, **trainer_kw):
    model = model or _Toy()
    x, y = _data()
    sampler = TrainingSampler(len(x), seed=1)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, sampler=sampler)
    opt = build_optimizer(model, "SGD", 0.05, momentum=0.9, weight_decay=0.0)
    sched = build_lr_scheduler(
        opt, "WarmupMultiStepLR", max_iter, steps=(40,), warmup_iters=5, warmup_factor=0.1
    )
    trainer = trainer_cls(model, loader, opt, **trainer_kw)
    trainer.scheduler = sched
    ckpt = Checkpointer(model, tmp_path, optimizer=opt, scheduler=sched, sampler=sampler)
    trainer.register_hooks(
        [
            IterationTimer(),
            LRScheduler(),
            PeriodicCheckpointer(ckpt, period),
            PeriodicWriter([JSONWriter(tmp_path / "metrics.jsonl")], period=1),
        ]
    )
    return trainer, ckpt


def _read_metrics(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_loss_decreases_and_metrics_and_checkpoints(tmp_path):
    trainer, _ = _setup(tmp_path, 50, period=20)
    trainer.train(0, 50)
    assert trainer.iter == 50 and trainer.completed
    rows = _read_metrics(tmp_path / "metrics.jsonl")
    assert [r["iteration"] for r in rows] == list(range(50))
    for r in rows:
        assert {"iteration", "total_loss", "loss_mse", "loss_l1", "lr", "time", "data_time"} <= set(r)
        assert r["total_loss"] == pytest.approx(r["loss_mse"] + r["loss_l1"], rel=1e-6)
        assert r["time"] >= 0 and r["data_time"] >= 0
    first = sum(r["total_loss"] for r in rows[:5]) / 5
    last = sum(r["total_loss"] for r in rows[-5:]) / 5
    assert last < 0.05 * first
    assert rows[0]["lr"] == pytest.approx(0.005)  # warm-up factor 0.1
    assert rows[45]["lr"] == pytest.approx(0.005)  # after the step at 40
    # periodic checkpoints at iterations 19 and 39, then the final one
    files = sorted(os.listdir(tmp_path))
    assert files == [
        "last_checkpoint",
        "metrics.jsonl",
        "model_0000019.pth",
        "model_0000039.pth",
        "model_final.pth",
    ]
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    ck = torch.load(tmp_path / "model_0000019.pth", weights_only=False)
    assert ck["iteration"] == 19
    assert ck["sampler_state"]["consumed"] == 20 * 8
    assert ck["scheduler"]["last_epoch"] == 20
    assert set(ck["rng_states"]) >= {"python", "numpy", "torch"}
    final = torch.load(tmp_path / "model_final.pth", weights_only=False)
    assert final["iteration"] == 49
    torch.testing.assert_close(final["model"]["fc.weight"], trainer.model.fc.weight.detach())


def test_non_finite_loss_raises_and_keeps_last_good_checkpoint(tmp_path):
    trainer, _ = _setup(tmp_path, 20, model=_Toy(nan_at=7), period=5)
    before = None

    class Snapshot(HookBase):
        def after_step(self):
            nonlocal before
            before = {k: v.clone() for k, v in self.trainer.model.state_dict().items()}

    trainer.register_hooks([Snapshot()])
    with pytest.raises(FloatingPointError, match=r"iteration=7.*loss_bad"):
        trainer.train(0, 20)
    assert trainer.iter == 7 and not trainer.completed
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000004.pth"
    assert sorted(p for p in os.listdir(tmp_path) if p.endswith(".pth")) == ["model_0000004.pth"]
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    # the failing iteration did not update the parameters
    for k, v in trainer.model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    rows = _read_metrics(tmp_path / "metrics.jsonl")
    assert [r["iteration"] for r in rows] == list(range(7))


def test_checkpoint_atomic_replace_and_load(tmp_path, monkeypatch):
    model = _Toy()
    ckpt = Checkpointer(model, tmp_path / "out")
    ckpt.save("model_a", iteration=3, note="x")
    # a failing write leaves neither a temp file nor a changed last_checkpoint
    real_save = torch.save

    def broken(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save("model_b", iteration=4)
    monkeypatch.setattr(torch, "save", real_save)
    assert sorted(os.listdir(tmp_path / "out")) == ["last_checkpoint", "model_a.pth"]
    assert ckpt.get_checkpoint_file() == str(tmp_path / "out" / "model_a.pth")
    with torch.no_grad():
        model.fc.weight.add_(1.0)
    other = _Toy()
    got = Checkpointer(other, tmp_path / "out").resume_or_load(None, resume=True)
    assert got["iteration"] == 3 and got["extra"] == {"note": "x"}
    assert not torch.equal(other.fc.weight, model.fc.weight)
    third = _Toy()
    with torch.no_grad():
        third.fc.weight.zero_()
    got = Checkpointer(third, tmp_path / "none").resume_or_load(tmp_path / "out" / "model_a.pth", resume=True)
    assert "iteration" not in got
    torch.testing.assert_close(third.fc.weight, other.fc.weight)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        ckpt.load(str(tmp_path / "missing.pth"))


def test_periodic_checkpointer_max_to_keep(tmp_path):
    trainer, _ = _setup(tmp_path, 12, period=2)
    trainer._hooks[2].max_to_keep = 2
    trainer.train(0, 12)
    pths = sorted(p for p in os.listdir(tmp_path) if p.endswith(".pth"))
    assert pths == ["model_0000009.pth", "model_0000011.pth", "model_final.pth"]


def test_amp_bf16_on_cpu_lowers_loss(tmp_path):
    trainer, _ = _setup(tmp_path, 40, period=100, trainer_cls=AMPTrainer, precision="bf16")
    trainer.train(0, 40)
    rows = _read_metrics(tmp_path / "metrics.jsonl")
    assert rows[-1]["total_loss"] < 0.2 * rows[0]["total_loss"]
    assert trainer.grad_scaler is None
    assert trainer.model.fc.weight.dtype == torch.float32
    with pytest.raises(ValueError, match="fp16.*bf16"):
        AMPTrainer(_Toy(), [], torch.optim.SGD(_Toy().parameters(), lr=0.1), precision="fp16")
    with pytest.raises(ValueError, match="precision"):
        AMPTrainer(_Toy(), [], torch.optim.SGD(_Toy().parameters(), lr=0.1), precision="fp8")


def test_amp_autocast_is_active():
    seen = []

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 1)

        def forward(self, batch):
            out = self.fc(batch)
            seen.append(out.dtype)
            return {"loss": out.float().pow(2).mean()}

    model = Probe()
    trainer = AMPTrainer(
        model, [torch.ones(3, 2)] * 2, torch.optim.SGD(model.parameters(), lr=0.1), precision="bf16"
    )
    trainer.train(0, 2)
    assert seen == [torch.bfloat16, torch.bfloat16]


def test_eval_hook_and_printer(tmp_path):
    trainer, _ = _setup(tmp_path, 10, period=100)
    calls = []

    def evaluate():
        calls.append(trainer.iter)
        return {"bbox": {"AP": float(len(calls))}}

    buf = io.StringIO()
    hook = EvalHook(4, evaluate)
    trainer.register_hooks([hook, PeriodicWriter([CommonMetricPrinter(10, file=buf)], period=5)])
    trainer.train(0, 10)
    assert calls == [3, 7, 10]  # every 4 iterations and once at the end
    assert [it for it, _ in hook.results] == [3, 7, 9]
    assert trainer.storage.history("bbox/AP").values() == [(1.0, 3), (2.0, 7), (3.0, 10)]
    lines = buf.getvalue().strip().splitlines()
    assert len(lines) == 2
    assert "iter: 5/10 [##########..........]" in lines[0] and "eta:" in lines[0]
    assert "iter: 10/10 [####################]" in lines[1]
    assert "total_loss:" in lines[1] and "lr:" in lines[1]


def test_tensorboard_writer(tmp_path):
    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(ImportError, match="tensorboard"):
            TensorboardXWriter(tmp_path)
    else:  # pragma: no cover - depends on the environment
        w = TensorboardXWriter(tmp_path)
        with EventStorage() as s:
            s.put_scalar("loss", 1.0)
            w.write()
        w.close()
        assert any(p.startswith("events") for p in os.listdir(tmp_path))


def test_event_storage():
    with EventStorage(start_iter=3) as s:
        for v in (5.0, 1.0, 3.0, 100.0):
            s.put_scalar("loss", v)
            s.put_scalar("lr", v / 10, smoothing_hint=False)
            s.step()
        assert s.history("loss").latest() == 100.0
        assert s.history("loss").median(3) == 3.0
        assert s.history("loss").avg(2) == 51.5
        assert s.latest()["loss"] == (100.0, 6)
        smooth = s.latest_with_smoothing_hint(4)
        assert smooth["loss"] == (4.0, 6) and smooth["lr"] == (10.0, 6)
        with pytest.raises(KeyError, match="nope"):
            s.history("nope")


def test_single_process_launch_and_comm():
    got = []
    launch(lambda a, b: got.append((a + b, get_rank(), get_world_size(), all_gather(a))), 1, args=(1, 2))
    assert got == [(3, 0, 1, [1])]
    with pytest.raises(ValueError, match="num_processes"):
        launch(print, 0)


def test_trainer_bad_input():
    with pytest.raises(TypeError, match="model"):
        SimpleTrainer(object(), [], torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1))
    model = _Toy()
    with pytest.raises(TypeError, match="optimizer"):
        SimpleTrainer(model, [], object())
    trainer = SimpleTrainer(model, [], torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="start_iter"):
        trainer.train(5, 2)
    with pytest.raises(TypeError, match="HookBase"):
        trainer.register_hooks([object()])


def test_hooks_registered_as_trainer_hook_components():
    from detcore.engine.train import hooks
    from detcore.plugins import get_component, list_components

    names = {e.name for e in list_components("trainer_hook")}
    assert {"IterationTimer", "LRScheduler", "PeriodicCheckpointer", "EvalHook", "PeriodicWriter"} <= names
    assert get_component("trainer_hook", "PeriodicWriter") is hooks.PeriodicWriter
    assert get_component("trainer_hook", "EvalHook") is hooks.EvalHook


def test_launch_env_init_like_torchrun(monkeypatch):
    import socket

    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "RANK": "0",
        "WORLD_SIZE": "1",
    }.items():
        monkeypatch.setenv(k, v)
    seen = []

    def main(tag):
        seen.append((tag, dist.is_initialized(), dist.get_backend(), get_world_size(), all_gather(tag)))

    launch(main, 1, args=("a",), dist_url="env://", backend="gloo")
    assert seen == [("a", True, "gloo", 1, ["a"])]
    assert not dist.is_initialized()
