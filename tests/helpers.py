"""Shared test helpers: small builds, randomised weights, error measures."""

from __future__ import annotations

import torch
from torch import nn

import lightattn

DIM, HEADS = 16, 2

# Settings that make a mechanism do its non-trivial thing on the small maps of the tests
# (e.g. fewer landmarks than tokens). Mechanisms not listed are built with their defaults.
SMALL_KWARGS: dict[str, dict] = {
    "window": {"window_size": 4},
    "grid": {"grid_size": 4},
    "nystrom": {"num_landmarks": 8},
}


def build(name: str, dim: int = DIM, num_heads: int = HEADS, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return lightattn.create_attention(
        name, dim, num_heads, **{**SMALL_KWARGS.get(name, {}), **kwargs}
    )


def randomize_(module: nn.Module, seed: int = 0, std: float = 0.3) -> nn.Module:
    """Overwrite every parameter with random values so that zero-initialised branches
    (offsets, gates, gammas) take part in the computation."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return module


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def grads(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Output and the gradients of a fixed random projection of it w.r.t. x and params."""
    x = x.detach().clone().requires_grad_(True)
    module.zero_grad(set_to_none=True)
    out = module(x)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out.dtype)
    (out * weight).sum().backward()
    param_grads = [
        p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
        for p in module.parameters()
    ]
    return out.detach(), [x.grad.detach().clone(), *param_grads]
