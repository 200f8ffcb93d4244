from __future__ import annotations

import pytest
import torch

from detcore.structures import ImageList


def ref_pad(tensors, size, pad_value):
    """Reference: float64 zero-filled batch of the given padded size, images copied top-left."""
    out = torch.full((len(tensors), *tensors[0].shape[:-2], *size), float(pad_value), dtype=torch.float64)
    for i, t in enumerate(tensors):
        out[i, ..., : t.shape[-2], : t.shape[-1]] = t.double()
    return out


def images(sizes, channels=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(channels, h, w, generator=g) for h, w in sizes]


@pytest.mark.parametrize(
    ("sizes", "div", "expected"),
    [
        ([(5, 7), (9, 4)], 0, (9, 7)),
        ([(5, 7), (9, 4)], 1, (9, 7)),
        ([(5, 7), (9, 4)], 4, (12, 8)),
        ([(32, 64)], 32, (32, 64)),
        ([(33, 1)], 32, (64, 32)),
    ],
)
def test_from_tensors_padding(sizes, div, expected):
    ims = images(sizes)
    il = ImageList.from_tensors(ims, size_divisibility=div, pad_value=-1.5)
    assert il.tensor.shape == (len(sizes), 3, *expected)
    assert il.image_sizes == sizes
    assert len(il) == len(sizes)
    torch.testing.assert_close(il.tensor.double(), ref_pad(ims, expected, -1.5))
    for i, im in enumerate(ims):
        torch.testing.assert_close(il[i], im)
    assert il.tensor.is_contiguous()
    assert il.device == torch.device("cpu")
    assert il.to(torch.float64).tensor.dtype == torch.float64


def test_padding_constraints():
    ims = images([(5, 7), (9, 4)])
    il = ImageList.from_tensors(ims, padding_constraints={"square_size": 16})
    assert il.tensor.shape == (2, 3, 16, 16)
    il = ImageList.from_tensors(ims, size_divisibility=32, padding_constraints={"size_divisibility": 8})
    assert il.tensor.shape == (2, 3, 16, 8)
    il = ImageList.from_tensors(ims, padding_constraints={"size_divisiblity": 5, "square_size": 12})
    assert il.tensor.shape == (2, 3, 15, 15)
    with pytest.raises(ValueError, match="square_size"):
        ImageList.from_tensors(ims, padding_constraints={"square_size": 8})


def test_other_ranks_and_dtypes():
    ims = [torch.arange(6, dtype=torch.uint8).view(2, 3), torch.ones(1, 4, dtype=torch.uint8)]
    il = ImageList.from_tensors(ims, pad_value=7)
    assert il.tensor.dtype == torch.uint8
    assert il.tensor.tolist() == [[[0, 1, 2, 7], [3, 4, 5, 7]], [[1, 1, 1, 1], [7, 7, 7, 7]]]


def test_errors():
    with pytest.raises(
        ValueError, match=r"tensors\[1\] has shape \[1, 4, 4\] but tensors\[0\] has shape \[3, 5, 5\]"
    ):
        ImageList.from_tensors([torch.zeros(3, 5, 5), torch.zeros(1, 4, 4)])
    with pytest.raises(ValueError, match=r"tensors\[1\] has shape \[4, 4\]"):
        ImageList.from_tensors([torch.zeros(3, 5, 5), torch.zeros(4, 4)])
    with pytest.raises(ValueError, match="must not be empty"):
        ImageList.from_tensors([])
    with pytest.raises(TypeError, match="list of Tensor"):
        ImageList.from_tensors(torch.zeros(2, 3, 4, 4))
    with pytest.raises(TypeError, match=r"tensors\[0\] must be a Tensor"):
        ImageList.from_tensors([[1, 2]])
    with pytest.raises(ValueError, match=r"tensors\[0\] must have shape \[..., H, W\]"):
        ImageList.from_tensors([torch.zeros(3)])


class _Batch(torch.nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ImageList.from_tensors([x, y], size_divisibility=8, pad_value=0.5).tensor


def test_torch_export_dynamic_sizes():
    h1, w1 = torch.export.Dim("h1", min=2, max=512), torch.export.Dim("w1", min=2, max=512)
    h2, w2 = torch.export.Dim("h2", min=2, max=512), torch.export.Dim("w2", min=2, max=512)
    ex = images([(10, 13), (7, 20)])
    program = torch.export.export(
        _Batch(), (ex[0], ex[1]), dynamic_shapes={"x": {1: h1, 2: w1}, "y": {1: h2, 2: w2}}
    )
    module = program.module()
    for sizes in ([(10, 13), (7, 20)], [(33, 9), (17, 40)], [(5, 5), (6, 6)]):
        x, y = images(sizes, seed=1)
        torch.testing.assert_close(module(x, y), _Batch()(x, y), rtol=0, atol=0)


def test_torch_export_single_image():
    class One(torch.nn.Module):
        def forward(self, x):
            return ImageList.from_tensors([x], size_divisibility=32).tensor

    h, w = torch.export.Dim("h", min=2, max=1024), torch.export.Dim("w", min=2, max=1024)
    program = torch.export.export(One(), (torch.rand(3, 40, 50),), dynamic_shapes={"x": {1: h, 2: w}})
    for size in ((40, 50), (64, 33)):
        x = torch.rand(3, *size)
        out = program.module()(x)
        assert out.shape[-2] % 32 == 0 and out.shape[-1] % 32 == 0
        torch.testing.assert_close(out, One()(x), rtol=0, atol=0)
