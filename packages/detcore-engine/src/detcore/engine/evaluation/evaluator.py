"""Dataset evaluators and the inference loop that feeds them (detectron2's ``detectron2.evaluation``)."""

from __future__ import annotations

import datetime
import logging
import math
import time
from collections import OrderedDict, abc
from collections.abc import Iterable, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn

__all__ = [
    "DatasetEvaluator",
    "DatasetEvaluators",
    "format_results_table",
    "inference_context",
    "inference_on_dataset",
    "print_csv_format",
]

logger = logging.getLogger(__name__)


class DatasetEvaluator:
    """Base class of evaluators: accumulate (input, output) pairs, then compute metrics.

    The protocol, as in detectron2: :meth:`reset` before a pass over the dataset, :meth:`process` for every
    batch, :meth:`evaluate` at the end.
    """

    def reset(self) -> None:
        """Prepare for a new round of evaluation (clears accumulated state)."""

    def process(self, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> None:
        """Consume one batch.

        Args:
            inputs: the model's inputs (one dict per image, e.g. with "image_id", "file_name", "sem_seg").
            outputs: the model's outputs for those inputs (one dict per image, e.g. with "instances").
        """

    def evaluate(self) -> OrderedDict[str, Any] | None:
        """Compute the metrics of everything processed since :meth:`reset`.

        Returns:
            ``{task: {metric: value}}``, or None when there is nothing to report.
        """
        return None


class DatasetEvaluators(DatasetEvaluator):
    """Several evaluators run as one; their results are merged (duplicate task keys are an error).

    Args:
        evaluators: the evaluators to combine.
    """

    def __init__(self, evaluators: Iterable[DatasetEvaluator]):
        super().__init__()
        self._evaluators = list(evaluators)
        for e in self._evaluators:
            if not isinstance(e, DatasetEvaluator):
                raise TypeError(f"evaluators must be DatasetEvaluator instances, got {type(e).__name__}")

    def reset(self) -> None:
        for evaluator in self._evaluators:
            evaluator.reset()

    def process(self, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> None:
        for evaluator in self._evaluators:
            evaluator.process(inputs, outputs)

    def evaluate(self) -> OrderedDict[str, Any]:
        results: OrderedDict[str, Any] = OrderedDict()
        for evaluator in self._evaluators:
            result = evaluator.evaluate()
            if result is None:
                continue
            for k, v in result.items():
                if k in results:
                    raise ValueError(
                        f"different evaluators produce results with the same key {k!r}: "
                        "each task must be reported by one evaluator"
                    )
                results[k] = v
        return results


@contextmanager
def inference_context(model: nn.Module):
    """Put ``model`` in eval mode for the duration of the block, then restore its training mode."""
    training_mode = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training_mode)


def _fmt_seconds(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(seconds)))


def inference_on_dataset(
    model: nn.Module | abc.Callable[[Any], Any],
    data_loader: Iterable[Any],
    evaluator: DatasetEvaluator | list[DatasetEvaluator] | None,
    *,
    return_timing: bool = False,
    log_period_s: float = 5.0,
) -> Any:
    """Run ``model`` on every batch of ``data_loader`` and evaluate the outputs with ``evaluator``.

    The model runs in eval mode (its previous mode is restored afterwards) under ``torch.no_grad()``.
    Progress is logged at most every ``log_period_s`` seconds; the total and per-iteration times are logged
    at the end, excluding the first ``min(5, num_batches - 1)`` warm-up iterations (as detectron2 does).

    Args:
        model: a callable taking one batch (a list of input dicts) and returning a list of output dicts.
        data_loader: an iterable of batches.
        evaluator: an evaluator, a list of evaluators (combined with :class:`DatasetEvaluators`), or None
            (only timing).
        return_timing: when True, return ``(results, timing)`` where ``timing`` has "num_batches",
            "num_warmup", "total_seconds", "seconds_per_iter", "compute_seconds" and
            "compute_seconds_per_iter" (the last four excluding warm-up; nan when nothing is left after
            warm-up).
        log_period_s: minimum seconds between two progress log lines.

    Returns:
        The evaluator's results (an empty dict when it returns None), plus the timing dict if asked.
    """
    if not callable(model):
        raise TypeError(f"model must be callable (an nn.Module or a function), got {type(model).__name__}")
    if evaluator is None:
        evaluator = DatasetEvaluators([])
    elif isinstance(evaluator, abc.MutableSequence):
        evaluator = DatasetEvaluators(evaluator)
    elif not isinstance(evaluator, DatasetEvaluator):
        raise TypeError(
            f"evaluator must be a DatasetEvaluator, a list of them or None, got {type(evaluator).__name__}"
        )
    try:
        total: int | None = len(data_loader)  # type: ignore[arg-type]
    except TypeError:
        total = None
    logger.info("Start inference on %s batches", total if total is not None else "an unknown number of")

    evaluator.reset()
    num_warmup = 5 if total is None else max(min(5, total - 1), 0)
    start_time = time.perf_counter()
    total_data_time = total_compute_time = total_eval_time = 0.0
    last_log = time.perf_counter()
    num_batches = 0
    with ExitStack() as stack:
        if isinstance(model, nn.Module):
            stack.enter_context(inference_context(model))
        stack.enter_context(torch.no_grad())
        start_data_time = time.perf_counter()
        for idx, inputs in enumerate(data_loader):
            num_batches = idx + 1
            total_data_time += time.perf_counter() - start_data_time
            if idx == num_warmup:
                start_time = time.perf_counter()
                total_data_time = total_compute_time = total_eval_time = 0.0
            start_compute_time = time.perf_counter()
            outputs = model(inputs)
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.synchronize()
            total_compute_time += time.perf_counter() - start_compute_time
            start_eval_time = time.perf_counter()
            evaluator.process(inputs, outputs)
            total_eval_time += time.perf_counter() - start_eval_time

            iters_after_start = idx + 1 - num_warmup * int(idx >= num_warmup)
            now = time.perf_counter()
            if now - last_log >= log_period_s and idx >= num_warmup:
                per_iter = (now - start_time) / iters_after_start
                eta = "?" if total is None else _fmt_seconds(per_iter * (total - idx - 1))
                logger.info(
                    "Inference done %d/%s. Dataloading: %.4f s/iter. Inference: %.4f s/iter. "
                    "Eval: %.4f s/iter. Total: %.4f s/iter. ETA=%s",
                    idx + 1,
                    total if total is not None else "?",
                    total_data_time / iters_after_start,
                    total_compute_time / iters_after_start,
                    total_eval_time / iters_after_start,
                    per_iter,
                    eta,
                )
                last_log = now
            start_data_time = time.perf_counter()

    if num_batches <= num_warmup:
        # the loader yielded no more than the warm-up batches: the clocks were never reset, so the
        # timing covers every batch
        num_warmup = 0
    timed = num_batches - num_warmup
    total_time = time.perf_counter() - start_time if timed > 0 else 0.0
    timing = {
        "num_batches": num_batches,
        "num_warmup": num_warmup,
        "total_seconds": total_time if timed > 0 else math.nan,
        "seconds_per_iter": total_time / timed if timed > 0 else math.nan,
        "compute_seconds": total_compute_time if timed > 0 else math.nan,
        "compute_seconds_per_iter": total_compute_time / timed if timed > 0 else math.nan,
    }
    logger.info(
        "Total inference time: %s (%.6f s / iter, %d iters after %d warm-up)",
        _fmt_seconds(total_time),
        timing["seconds_per_iter"],
        timed,
        num_warmup,
    )
    logger.info(
        "Total inference pure compute time: %s (%.6f s / iter)",
        _fmt_seconds(total_compute_time if timed > 0 else 0.0),
        timing["compute_seconds_per_iter"],
    )

    results = evaluator.evaluate()
    if results is None:
        results = OrderedDict()
    if return_timing:
        return results, timing
    return results


def format_results_table(metrics: Mapping[str, Any], *, float_format: str = "{:.3f}") -> str:
    """A small pipe table with the metric names as header and their values as the single row.

    Args:
        metrics: ``{name: value}``; floats are formatted with ``float_format``.
    """
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a mapping of name -> value, got {type(metrics).__name__}")
    keys = [str(k) for k in metrics]
    vals = [float_format.format(v) if isinstance(v, float) else str(v) for v in metrics.values()]
    widths = [max(len(k), len(v)) for k, v in zip(keys, vals)]
    header = "| " + " | ".join(k.center(w) for k, w in zip(keys, widths)) + " |"
    rule = "|" + "|".join(":" + "-" * w + ":" for w in widths) + "|"
    row = "| " + " | ".join(v.center(w) for v, w in zip(vals, widths)) + " |"
    return "\n".join([header, rule, row])


def print_csv_format(results: Mapping[str, Any]) -> list[str]:
    """Log the main metrics of every task in detectron2's "copypaste" csv format.

    Per-category metrics (keys with a "-", like "AP-person") are left out.

    Args:
        results: ``{task: {metric: value}}`` as returned by :meth:`DatasetEvaluator.evaluate`; a
            non-mapping value is printed as ``task=value``.

    Returns:
        The logged lines (without the "copypaste: " prefix).
    """
    if not isinstance(results, Mapping):
        raise TypeError(f"results must be a mapping of task -> metrics, got {type(results).__name__}")
    lines = []
    for task, res in results.items():
        if isinstance(res, Mapping):
            important = [(k, v) for k, v in res.items() if "-" not in k]
            lines.append(f"Task: {task}")
            lines.append(",".join(k for k, _ in important))
            lines.append(",".join(f"{float(v):.4f}" for _, v in important))
        else:
            lines.append(f"{task}={res}")
    for line in lines:
        logger.info("copypaste: %s", line)
    return lines
