"""Every registered mechanism exports with torch.export with dynamic batch, H and W, and the
exported program equals eager at sizes other than the export size (no size baked in)."""

from __future__ import annotations

import pytest
import torch
from torch.export import Dim
from torch.fx.experimental import _config as fx_config

import lightattn

VARIANTS = {
    "window": [{"window_size": 4}, {"window_size": 4, "shift": True}],
    "acmix": [{}, {"att": "window"}],
    "sra": [{}, {"pool_size": 3}],
}
SIZES = [(13, 19), (3, 2), (8, 8)]


def export_dynamic(module: torch.nn.Module, x: torch.Tensor):
    """torch.export with dynamic batch, H and W (H, W >= 2), size-oblivious for size-1 dims."""
    dims = {0: Dim("b", min=1, max=64), 2: Dim("h", min=2, max=512), 3: Dim("w", min=2, max=512)}
    with fx_config.patch(backed_size_oblivious=True):
        return torch.export.export(module, (x,), dynamic_shapes={"x": dims})


def cases():
    for name in lightattn.list_attention():
        for kwargs in VARIANTS.get(name, [{}]):
            yield pytest.param(name, kwargs, id=f"{name}-{kwargs}" if kwargs else name)


@pytest.mark.parametrize(("name", "kwargs"), list(cases()))
def test_export_with_dynamic_sizes_matches_eager(name, kwargs):
    torch.manual_seed(0)
    module = lightattn.create_attention(name, 16, 2, **kwargs).eval()
    if name == "castling":
        module.set_aux_weight(0.0)
        lightattn.switch_to_inference(module)
    exported = export_dynamic(module, torch.randn(2, 16, 9, 11)).module()
    for h, w in SIZES:
        x = torch.randn(3, 16, h, w)
        with torch.no_grad():
            torch.testing.assert_close(exported(x), module(x), atol=1e-5, rtol=1e-5)


def test_traced_window_has_no_size_branch():
    """While tracing, the block layout never takes the eager shortcut of a plain partition,
    so a map divisible by the window at export time still works at other sizes."""
    module = lightattn.create_attention("window", 16, 2, window_size=4).eval()
    exported = export_dynamic(module, torch.randn(1, 16, 8, 8)).module()
    x = torch.randn(2, 16, 6, 10)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), module(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("n", "m"), [(7, 3), (12, 4), (5, 5), (99, 64)])
def test_segment_means_export_form_equals_eager(n, m):
    """nystrom's traced segment means (an averaging matrix) equal the eager index_add."""
    from lightattn.layers.nystrom import _segment_means_matmul, segment_means

    x = torch.randn(2, 3, n, 8)
    torch.testing.assert_close(_segment_means_matmul(x, m), segment_means(x, m))


@pytest.mark.parametrize(("h", "w", "size"), [(9, 11, (3, 3)), (3, 2, (3, 2)), (13, 19, (7, 7))])
def test_adaptive_pool_export_form_equals_eager(h, w, size):
    """sra's traced adaptive pooling (two averaging matrices) equals adaptive_avg_pool2d."""
    from lightattn.layers.sra import _pool_matrix

    x = torch.randn(2, 4, h, w)
    rows, cols = _pool_matrix(h, size[0], x), _pool_matrix(w, size[1], x)
    expected = torch.nn.functional.adaptive_avg_pool2d(x, size)
    torch.testing.assert_close(rows @ x @ cols.T, expected)


@pytest.mark.parametrize(("h", "w"), [(3, 2), (9, 11), (7, 7), (15, 8)])
def test_acmix_traced_halo_sees_each_query_neighbourhood(h, w, monkeypatch):
    """While tracing, acmix's sliding path uses full 7x7 tiles with a halo on every side;
    each real query must still see exactly the tokens of its in-map 7x7 neighbourhood."""
    from lightattn.layers import acmix

    monkeypatch.setattr(acmix, "tracing", lambda: True)
    order, mask = acmix.build_halo(h, w, 7, torch.device("cpu"))
    tiles_w = -(-w // 7)
    order = order.view(mask.shape[0], -1)
    for tile in range(mask.shape[0]):
        ty, tx = divmod(tile, tiles_w)
        for qi in range(49):
            y, x = ty * 7 + qi // 7, tx * 7 + qi % 7
            if y >= h or x >= w:
                continue
            seen = set(order[tile, mask[tile, qi]].tolist())
            expected = {
                yy * w + xx
                for yy in range(max(0, y - 3), min(h, y + 4))
                for xx in range(max(0, x - 3), min(w, x + 4))
            }
            assert seen == expected, (tile, qi)
