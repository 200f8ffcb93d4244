"""DatasetEvaluator(s), inference_on_dataset and the result printers."""

from __future__ import annotations

import logging
from collections import OrderedDict

import pytest
import torch
from torch import nn

from detcore.engine.evaluation import (
    DatasetEvaluator,
    DatasetEvaluators,
    format_results_table,
    inference_on_dataset,
    print_csv_format,
)


class _Recorder(DatasetEvaluator):
    def __init__(self, key="count"):
        self.key = key
        self.resets = 0

    def reset(self):
        self.resets += 1
        self.seen = []

    def process(self, inputs, outputs):
        self.seen.extend(zip(inputs, outputs))

    def evaluate(self):
        total = sum(float(o["y"]) for _, o in self.seen)
        return OrderedDict({self.key: {"n": len(self.seen), "sum": total}})


class _Doubler(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(2.0))
        self.modes = []

    def forward(self, batch):
        self.modes.append((self.training, torch.is_grad_enabled()))
        return [{"y": self.w * d["x"]} for d in batch]


def test_inference_on_dataset_runs_model_in_eval_no_grad(caplog):
    model = _Doubler().train()
    loader = [[{"x": torch.tensor(float(i))}, {"x": torch.tensor(float(i) + 0.5)}] for i in range(8)]
    ev = _Recorder()
    with caplog.at_level(logging.INFO, logger="detcore.engine.evaluation.evaluator"):
        results, timing = inference_on_dataset(model, loader, ev, return_timing=True)
    assert model.modes == [(False, False)] * 8
    assert model.training  # restored
    assert ev.resets == 1
    assert results == {"count": {"n": 16, "sum": pytest.approx(2 * sum(i + i + 0.5 for i in range(8)))}}
    assert timing["num_batches"] == 8 and timing["num_warmup"] == 5
    assert timing["total_seconds"] >= timing["compute_seconds"] >= 0
    assert timing["seconds_per_iter"] == pytest.approx(timing["total_seconds"] / 3)
    assert "Total inference time" in caplog.text and "pure compute time" in caplog.text
    # a list of evaluators is combined; an eval-mode model stays in eval mode
    model.eval()
    results = inference_on_dataset(model, loader[:2], [_Recorder("a"), _Recorder("b")])
    assert list(results) == ["a", "b"] and results["b"]["n"] == 4
    assert not model.training


def test_inference_on_dataset_without_evaluator_and_tiny_loaders():
    results, timing = inference_on_dataset(lambda b: [{"y": 0}], [[{}]], None, return_timing=True)
    assert results == {} and timing["num_warmup"] == 0 and timing["num_batches"] == 1
    results, timing = inference_on_dataset(lambda b: [], [], None, return_timing=True)
    assert timing["num_batches"] == 0
    # a generator has no len(): all batches still run
    ev = _Recorder()
    inference_on_dataset(lambda b: [{"y": 1.0}], ([{}] for _ in range(3)), ev)
    assert len(ev.seen) == 3
    with pytest.raises(TypeError, match="evaluator"):
        inference_on_dataset(lambda b: b, [], object())
    with pytest.raises(TypeError, match="model"):
        inference_on_dataset(3, [], None)


def test_dataset_evaluators_merge_and_reject_duplicates():
    evs = DatasetEvaluators([_Recorder("a"), _Recorder("b")])
    evs.reset()
    evs.process([{}], [{"y": 3.0}])
    assert evs.evaluate() == {"a": {"n": 1, "sum": 3.0}, "b": {"n": 1, "sum": 3.0}}
    dup = DatasetEvaluators([_Recorder("a"), _Recorder("a")])
    dup.reset()
    with pytest.raises(ValueError, match="same key 'a'"):
        dup.evaluate()
    with pytest.raises(TypeError, match="DatasetEvaluator"):
        DatasetEvaluators([object()])
    assert DatasetEvaluator().evaluate() is None


def test_print_csv_format_and_table(caplog):
    res = {"bbox": {"AP": 40.123456, "AP50": 60.0, "AP-person": 1.0}, "misc": 3}
    with caplog.at_level(logging.INFO, logger="detcore.engine.evaluation.evaluator"):
        lines = print_csv_format(res)
    assert lines == ["Task: bbox", "AP,AP50", "40.1235,60.0000", "misc=3"]
    assert "copypaste: 40.1235,60.0000" in caplog.text
    table = format_results_table({"AP": 40.12345, "APs": float("nan")})
    assert table.splitlines()[0].split("|")[1].strip() == "AP"
    assert "40.123" in table and "nan" in table
    with pytest.raises(TypeError, match="results"):
        print_csv_format([1])


def test_plugin_registers_evaluators_lazily():
    from detcore.engine import _plugin
    from detcore.engine.evaluation import COCOEvaluator, SemSegEvaluator
    from detcore.plugins import ComponentRegistry

    registry = ComponentRegistry()
    _plugin.detcore_register_components(registry)
    assert "evaluator" in set(registry.declared_kinds())
    for name, cls in [("COCOEvaluator", COCOEvaluator), ("SemSegEvaluator", SemSegEvaluator)]:
        entry = registry.resolve("evaluator", name)
        assert isinstance(entry.target, str) and ":" in entry.target
        assert registry.get("evaluator", name) is cls


def test_public_api():
    import detcore.engine.evaluation as evaluation

    assert sorted(evaluation.__all__) == evaluation.__all__
    for name in evaluation.__all__:
        assert hasattr(evaluation, name), name
