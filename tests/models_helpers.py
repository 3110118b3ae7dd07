"""Small variants of every named model (same family and block pattern, narrow and shallow),
so forward/backward tests stay fast."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import lightattn
from lightattn.models import model_entry

# per family: widths and depths small enough for a 224² forward/backward in ~0.1 s, deep
# enough that every stage has each block kind of its pattern (Swin's shifted block, DAT's
# deformable one) and heads divisible by DAT's offset groups (3, 6)
TINY: dict[str, dict] = {
    "swin": {"embed_dim": 16, "depths": (1, 1, 2, 1), "num_heads": (1, 2, 2, 4)},
    "acmix_swin": {"embed_dim": 16, "depths": (1, 1, 2, 1), "num_heads": (1, 2, 2, 4)},
    "pvt_v2": {"embed_dims": (16, 32, 64, 128), "depths": (1, 1, 2, 1), "num_heads": (1, 2, 4, 8)},
    "litv2": {"embed_dim": 16, "depths": (1, 1, 2, 1), "num_heads": (1, 2, 2, 4)},
    "dat": {"embed_dim": 24, "depths": (2, 2, 2, 2), "num_heads": (1, 2, 3, 6)},
}


def tiny(name: str, seed: int = 0, **kwargs) -> nn.Module:
    """The named model `name` (or a family) with the small widths and depths of its family."""
    family = name if name in TINY else model_entry(name).family
    torch.manual_seed(seed)
    return lightattn.create_model(name, **{**TINY[family], **kwargs})


def wake_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every all-zero parameter (zero-initialised offsets, gammas, biases) small random
    values, so that every branch takes part and every gradient can be non-zero."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return model


def counted_macs(model: nn.Module, x: torch.Tensor) -> int:
    """MACs FlopCounterMode sees in one forward (SDPA under the math backend, so its matmuls
    are counted), eval mode, no grad."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        model(x)
    total = counter.get_total_flops()
    assert total % 2 == 0
    return total // 2


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()
