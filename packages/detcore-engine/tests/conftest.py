from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def shapes_small(tmp_path_factory):
    """A tiny shapes dataset (8 train, 2 val images, seed 0): ``{split: (json_file, image_root)}``."""
    from detcore.engine.data.shapes import make_shapes_dataset

    root = tmp_path_factory.mktemp("shapes")
    return make_shapes_dataset(root, num_train=8, num_val=2, seed=0)
