"""The train loader's DataLoader draws its base seed from the torch RNG at ``iter()``, never at the first
``next()``: SimpleTrainer shields the ``iter()`` call, so a resumed run's torch RNG stream is not shifted."""

from __future__ import annotations

import pytest
import torch

from detcore.engine.data import build_detection_train_loader


@pytest.mark.parametrize("collate", [None, list])
def test_grouped_loader_draws_seed_at_iter_not_next(collate):
    dicts = [{"height": 10, "width": 20 if i % 2 else 8, "i": i} for i in range(6)]
    loader = build_detection_train_loader(
        dicts, mapper=None, total_batch_size=2, aspect_ratio_grouping=True, seed=0, collate_fn=collate
    )
    torch.manual_seed(0)
    s0 = torch.get_rng_state()
    it = iter(loader)
    s1 = torch.get_rng_state()
    batch = next(it)
    s2 = torch.get_rng_state()
    assert not torch.equal(s0, s1)  # the DataLoader's base seed was drawn by iter()
    assert torch.equal(s1, s2)  # ... and not by the first next()
    assert len(batch) == 2
    assert len({d["width"] > d["height"] for d in batch}) == 1  # grouped by orientation
