"""ONNX export with dynamic batch, H and W (`lightattn.export.onnx`): onnxruntime equals eager
at sizes other than the export size, for every registered mechanism, each model family (small
variants, with its own attention and with mhsa) and the tamper network. Parameters are
randomised first (zero-initialised gammas and offsets would make the parity vacuous)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from models_helpers import TINY
from onnx_pending import PENDING

import lightattn
from lightattn.export import MAX_OPSET, MIN_OPSET, ExportError, export_onnx, verify_onnx
from lightattn.export.onnx import eager_outputs, ort_session, run_ort
from lightattn.layers import AttentionBase
from lightattn.models import list_families

TOL = 1e-4
DIM, HEADS = 16, 2
LAYER_EXAMPLE = (2, DIM, 9, 11)
LAYER_CASES = [(1, 13, 19), (3, 3, 2), (3, 8, 8)]  # (batch, H, W), none the export size
NET_EXAMPLE = (2, 3, 64, 64)
NET_CASES = [(1, 75, 101), (3, 33, 47)]
# one block per stage: the smallest network with every stage's code path; DAT alternates
# local and deformable blocks, so it keeps two per stage
SHALLOW = {family: (2, 2, 2, 2) if family == "dat" else (1, 1, 1, 1) for family in TINY}
PENDING_MARK = pytest.mark.xfail(strict=True, reason="export rewrite pending (onnx_pending)")


def randomize_(module: torch.nn.Module, seed: int = 0, scale: float = 0.2) -> torch.nn.Module:
    """Every parameter to small random values (fixed seed), in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return module.eval()


def inputs(cases: list[tuple[int, int, int]], channels: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(b, channels, h, w, generator=gen) for b, h, w in cases]


class Exports:
    """Each case exported once per test module: key -> (module, path), or the export error;
    `before[key]`: the module's state and mode before it was exported."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.done, self.before = folder, {}, {}

    def get(self, key: str, build, example: tuple[int, ...]):
        if key not in self.done:
            module = build()
            self.before[key] = (snapshot(module), module.training)
            try:
                x = torch.randn(*example, generator=torch.Generator().manual_seed(2))
                self.done[key] = (module, export_onnx(module, x, self.folder / f"{key}.onnx"))
            except ExportError as err:
                self.done[key] = err
        if isinstance(self.done[key], ExportError):
            raise self.done[key]
        return self.done[key]


def snapshot(module: torch.nn.Module) -> dict:
    return {k: v.clone() if torch.is_tensor(v) else v for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> Exports:
    return Exports(tmp_path_factory.mktemp("onnx"))


def mechanism(name: str) -> torch.nn.Module:
    """A randomised mechanism, left in train mode (the export must not change it)."""
    torch.manual_seed(0)
    return randomize_(lightattn.create_attention(name, DIM, HEADS)).train()


def mechanism_cases():
    for name in lightattn.list_attention():
        yield pytest.param(name, id=name, marks=[PENDING_MARK] * (name in PENDING))


@pytest.mark.parametrize("name", list(mechanism_cases()))
def test_mechanism_onnx_matches_eager(exports, name):
    module, path = exports.get(name, lambda: mechanism(name), LAYER_EXAMPLE)
    xs = inputs(LAYER_CASES, DIM)
    diffs = verify_onnx(path, module, xs)
    assert max(diffs) <= TOL, dict(zip(LAYER_CASES, diffs, strict=True))
    assert float((eager_outputs(module, xs[0])[0] - xs[0]).abs().max()) > 1e-3  # not identity


def test_export_leaves_the_module_untouched_and_writes_a_dynamic_file(exports):
    """Castling (exported switched to inference) stays in train mode with its aux branch,
    its state unchanged; the file has dynamic B, H, W, named input and output."""
    module, path = exports.get("castling", lambda: mechanism("castling"), LAYER_EXAMPLE)
    state, training = exports.before["castling"]
    assert training and module.training and module.has_aux and module.aux_weight == 1.0
    now = module.state_dict()
    assert now.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(value, now[key]) if torch.is_tensor(value) else value == now[key]
    proto = onnx.load(str(path))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param != "" for d in dims] == [True, False, True, True]
    assert dims[1].dim_value == DIM
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["output"]
    assert {p.key: p.value for p in proto.metadata_props}["lightattn.input"].startswith("B 1..")


def test_ort_sessions_do_not_spin_unless_asked(exports):
    """Idle ORT threads must sleep by default: spinning ones stole the cores from torch's
    interleaved eager calls (the benchmark, verification) and slowed them up to 1.6x."""
    _, path = exports.get("castling", lambda: mechanism("castling"), LAYER_EXAMPLE)
    key = "session.intra_op.allow_spinning"
    assert ort_session(path).get_session_options().get_session_config_entry(key) == "0"
    spinning = ort_session(path, spin=True).get_session_options()
    with pytest.raises(RuntimeError):  # the entry is absent: ORT's default, spinning
        spinning.get_session_config_entry(key)


def test_bad_opset_and_example_are_value_errors(tmp_path):
    module = lightattn.create_attention("mhsa", DIM, HEADS)
    x = torch.randn(*LAYER_EXAMPLE)
    for opset in (MIN_OPSET - 1, MAX_OPSET + 1, "18"):
        with pytest.raises(ValueError, match="opset"):
            export_onnx(module, x, tmp_path / "m.onnx", opset=opset)
    with pytest.raises(ValueError, match="H and W must be >= 2"):
        export_onnx(module, torch.randn(2, DIM, 1, 5), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_a_size_decision_is_an_export_error_not_a_wrong_file(tmp_path):
    """A Python branch on H (here: a crop only on even heights) cannot be exported with a
    dynamic H: the export refuses instead of writing a graph that is wrong at other sizes."""

    class EvenCrop(torch.nn.Module):
        def forward(self, x):
            return x[:, :, :-1] if x.shape[2] % 2 == 0 else x

    with pytest.raises(ExportError, match="torch.export failed"):
        export_onnx(EvenCrop(), torch.randn(2, 3, 8, 8), tmp_path / "e.onnx", min_side=2)
    assert not (tmp_path / "e.onnx").exists()


def native_mechanisms(family: str) -> set[str]:
    model = lightattn.create_model(family, **{**TINY[family], "depths": SHALLOW[family]})
    return {m.name for m in model.modules() if isinstance(m, AttentionBase)}


def family(name: str, attn: str | None) -> torch.nn.Module:
    kwargs = {**TINY[name], "depths": SHALLOW[name], "num_classes": 10}
    if attn is not None:
        kwargs["attn"] = attn
    torch.manual_seed(0)
    return randomize_(lightattn.create_model(name, **kwargs))


def family_cases():
    for name in list_families():
        pending = sorted(native_mechanisms(name) & PENDING)
        mark = [pytest.mark.xfail(strict=True, reason=f"pending: {pending}")] if pending else []
        # each family with its own attention runs by default (~2.5 min for the five)
        yield pytest.param(name, None, id=f"{name}-native", marks=mark)
        yield pytest.param(name, "mhsa", id=f"{name}-mhsa", marks=[pytest.mark.slow])


@pytest.mark.parametrize(("name", "attn"), list(family_cases()))
def test_model_family_onnx_matches_eager(exports, name, attn):
    module, path = exports.get(f"{name}-{attn}", lambda: family(name, attn), NET_EXAMPLE)
    xs = inputs(NET_CASES, 3)
    diffs = verify_onnx(path, module, xs)
    assert max(diffs) <= TOL, dict(zip(NET_CASES, diffs, strict=True))
    assert [o.name for o in ort_session(path).get_outputs()] == ["output"]


def test_tamper_network_onnx_matches_eager(exports):
    """The shipped tamper checkpoint: named outputs, dynamic sizes, ORT equals eager."""
    from lightattn.tamper.checkpoint import load_tamper_model
    from lightattn.tamper.predict import default_checkpoint

    module, path = exports.get(
        "tamper", lambda: load_tamper_model(default_checkpoint())[0], NET_EXAMPLE
    )
    session = ort_session(path)
    assert [o.name for o in session.get_outputs()] == ["mask_logits", "score_logits"]
    xs = inputs(NET_CASES, 3)
    mask, score = run_ort(session, xs[0])
    assert mask.shape == (1, 1, 75, 101) and score.shape == (1,)
    assert np.isfinite(mask).all() and mask.std() > 1e-3
    diffs = verify_onnx(path, module, xs, session)
    assert max(diffs) <= TOL, dict(zip(NET_CASES, diffs, strict=True))
