"""ONNX export with dynamic batch, H and W, and onnxruntime sessions to check and time it.

    path = export_onnx(module, torch.randn(2, 64, 14, 14), "w.onnx")
    diffs = verify_onnx(path, module, [torch.randn(1, 64, 13, 19)])   # max |ORT - eager|
    session = ort_session(path)                                      # CPU, torch's threads

The graph is traced by `torch.export` first, with strict dynamic dimensions: a Python
decision on H or W (a guard that not every size in the declared range satisfies) is an
error here, never an ONNX file that is silently wrong at other sizes.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

MIN_OPSET = 18  # the exporter's own opset; lower ones go through ONNX's version converter
MAX_OPSET = 23  # the newest whose every op onnxruntime 1.2x/1.3x runs on the CPU
# smallest exported H, W: 2 for a mechanism; 33 for a stride-32 network (torch's conv shape
# rule guards on maps of one pixel, so its last stage needs at least 2 x 2)
MECHANISM_MIN_SIDE, NETWORK_MIN_SIDE = 2, 33
MAX_BATCH = 4096
MAX_SIDE = 16384
INPUT_NAME = "input"
# torch.export's and the ONNX exporter's loggers (a warning per missing torchvision op)
QUIET_LOGGERS = ("torch.onnx", "torch.export", "torch._export", "torch.fx", "torch._dynamo")


class ExportError(RuntimeError):
    """torch.export or the ONNX conversion failed; the message is one line."""


def check_opset(opset: object) -> int:
    """`opset` as an int; ValueError naming it and the supported range otherwise."""
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise ValueError(f"opset={opset!r} must be an integer in {MIN_OPSET}..{MAX_OPSET}")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset={opset} is not supported; supported: {MIN_OPSET}..{MAX_OPSET}")
    return opset


def inference_copy(module: nn.Module) -> nn.Module:
    """An eval-mode deep copy of `module` with every Castling layer switched to inference
    (its training-only branch removed; eval mode never runs it, so outputs are unchanged)."""
    from ..layers.castling import CastlingAttention, switch_to_inference

    copied = copy.deepcopy(module).eval()
    for layer in copied.modules():
        if isinstance(layer, CastlingAttention) and layer.has_aux:
            layer.set_aux_weight(0.0)
    return switch_to_inference(copied)


def flat_outputs(out: Any) -> list[Tensor]:
    """A module's output as a flat list of tensors (a tensor, a sequence, or a dict's
    values in order)."""
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for value in out.values() for t in flat_outputs(value)]
    if isinstance(out, (list, tuple)):
        return [t for value in out for t in flat_outputs(value)]
    raise ValueError(f"module output of type {type(out).__name__} is not a tensor, list or dict")


def output_names(out: Any) -> list[str]:
    """ONNX output names for a module's output: "output" for a tensor, the keys of a dict of
    tensors, "output_<i>" for a list or tuple."""
    if isinstance(out, Tensor):
        return ["output"]
    if isinstance(out, dict) and all(isinstance(v, Tensor) for v in out.values()):
        return [str(key) for key in out]
    return [f"output_{i}" for i in range(len(flat_outputs(out)))]


def dynamic_dims(min_side: int) -> dict[int, torch.export.Dim]:
    """Dims 0 (batch), 2 (H) and 3 (W) of a (B, C, H, W) input, dynamic."""
    dim = torch.export.Dim
    return {
        0: dim("batch", min=1, max=MAX_BATCH),
        2: dim("height", min=min_side, max=MAX_SIDE),
        3: dim("width", min=min_side, max=MAX_SIDE),
    }


def default_min_side(module: nn.Module) -> int:
    """The smallest H, W exported by default: MECHANISM_MIN_SIDE for an attention
    mechanism, NETWORK_MIN_SIDE for anything else (a stride-32 backbone or network)."""
    from ..layers._base import AttentionBase

    return MECHANISM_MIN_SIDE if isinstance(module, AttentionBase) else NETWORK_MIN_SIDE


def check_example(example: object, min_side: int) -> Tensor:
    """ValueError unless `example` is a floating (B, C, H, W) tensor with H, W >= min_side."""
    if not isinstance(example, Tensor) or not example.is_floating_point():
        raise ValueError("example must be a floating point torch.Tensor")
    if example.dim() != 4:
        raise ValueError(f"example shape={tuple(example.shape)} must be (B, C, H, W)")
    if min(example.shape[2:]) < min_side:
        raise ValueError(
            f"example shape={tuple(example.shape)}: H and W must be >= {min_side} "
            "(the smallest exported size)"
        )
    return example


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the exporters' (and onnxruntime's quantizer's) prints, warnings and log
    records below ERROR."""
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    disabled = logging.root.manager.disable
    sink = io.StringIO()
    try:
        logging.disable(logging.WARNING)
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(sink),
            contextlib.redirect_stderr(sink),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(disabled)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def short_error(err: BaseException) -> str:
    """The first line of an exporter error, with the first violated guard when there is one."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    first = lines[0] if lines else type(err).__name__
    guard = next((line for line in lines[1:] if line.startswith("- Not all values")), "")
    text = f"{type(err).__name__}: {first}" + (f" {guard}" if guard else "")
    return text if len(text) <= 400 else text[:399] + "…"


def trace(model: nn.Module, example: Tensor, dynamic: bool, min_side: int) -> Any:
    """torch.export of `model` on `example`; dynamic batch, H, W with strict constraints."""
    from torch.fx.experimental import _config as fx_config

    shapes = (dynamic_dims(min_side),) if dynamic else None
    try:
        with quiet(), fx_config.patch(backed_size_oblivious=True):
            return torch.export.export(model, (example,), dynamic_shapes=shapes)
    except Exception as err:  # torch.export raises many error types
        raise ExportError(f"torch.export failed: {short_error(err)}") from err


def export_onnx(
    module: nn.Module,
    example: Tensor,
    path: str | Path,
    *,
    opset: int = MIN_OPSET,
    dynamic: bool = True,
    min_side: int | None = None,
    names: Sequence[str] | None = None,
) -> Path:
    """Write `module` (in eval mode; a deep copy is exported, castling layers switched to
    inference) as an ONNX file at `path` and return the path.

    `example`: a (B, C, H, W) input. With `dynamic`, batch, H and W are dynamic (1 <= B
    <= MAX_BATCH, min_side <= H, W <= MAX_SIDE; `min_side` defaults to `default_min_side`):
    a Python decision on a size inside the module raises ExportError instead of baking the
    example's size in. The ONNX input is
    named "input"; outputs are named by `names`, else after the output: "output" for one
    tensor, a dict's keys (e.g. {"mask_logits", "score_logits"}), "output_<i>" for a
    list. ValueError for an opset outside MIN_OPSET..MAX_OPSET or a bad example;
    ExportError when the module cannot be exported.
    """
    opset = check_opset(opset)
    min_side = default_min_side(module) if min_side is None else min_side
    example = check_example(example, min_side if dynamic else 1)
    model = inference_copy(module)
    with torch.no_grad():
        out = model(example)
    names = list(names) if names is not None else output_names(out)
    if len(names) != len(flat_outputs(out)):
        raise ValueError(f"names={names} do not match the {len(flat_outputs(out))} outputs")
    program = trace(model, example, dynamic, min_side)
    try:
        with quiet():
            onnx_program = torch.onnx.export(
                program, dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                output_names=names, verbose=False, optimize=True,
            )  # fmt: skip
    except Exception as err:  # noqa: BLE001 - the converter raises many error types
        raise ExportError(f"ONNX conversion failed: {short_error(err)}") from err
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with quiet():
        onnx_program.save(str(path))
    finish_file(path, opset, dynamic, min_side)
    return path


def finish_file(path: Path, opset: int, dynamic: bool, min_side: int) -> None:
    """Check the written file and record its valid input sizes in its metadata
    ("lightattn.input": e.g. "B 1..4096, H 2..16384, W 2..16384"). ExportError when it has
    another opset than asked for (the version converter gave up) or, with `dynamic`, a
    fixed batch, H or W."""
    import onnx

    proto = onnx.load(str(path))
    got = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if got != opset:
        raise ExportError(f"the exporter wrote opset {got}, not opset={opset}")
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    if dynamic:
        fixed = [i for i in (0, 2, 3) if dims[i].HasField("dim_value")]
        if fixed:
            raise ExportError(f"input dimension(s) {fixed} were fixed by the export")
        sizes = f"B 1..{MAX_BATCH}, H {min_side}..{MAX_SIDE}, W {min_side}..{MAX_SIDE}"
    else:
        sizes = "fixed " + "x".join(str(d.dim_value) for d in dims)
    entry = proto.metadata_props.add()
    entry.key, entry.value = "lightattn.input", sizes
    onnx.save(proto, str(path))


def ort_session(path: str | Path, threads: int | None = None, *, spin: bool = False) -> Any:
    """An onnxruntime CPU InferenceSession of `path` with `threads` intra-op threads
    (default: torch's current number), one inter-op thread, all graph optimizations.

    `spin=False` (default): idle ORT threads sleep instead of spinning. Spinning threads
    keep a core busy after each run and, in a process that also runs torch (the benchmark,
    verification), slowed torch's 2-thread eager calls by up to 1.5x here."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_feed(session: Any, x: Tensor) -> dict[str, np.ndarray]:
    """The input feed of a one-input session: {input name: x as a C-contiguous array}."""
    array = np.ascontiguousarray(x.detach().to("cpu").numpy())
    return {session.get_inputs()[0].name: array}


def run_ort(session: Any, x: Tensor) -> list[np.ndarray]:
    """The session's outputs for the (B, C, H, W) input `x`, in the session's order."""
    return session.run(None, ort_feed(session, x))


@torch.no_grad()
def eager_outputs(module: nn.Module, x: Tensor) -> list[Tensor]:
    """`module(x)` in eval mode as a flat list (the module's mode is restored)."""
    was_training = module.training
    module.eval()
    try:
        return flat_outputs(module(x))
    finally:
        module.train(was_training)


def max_abs_diff(ort_out: Sequence[np.ndarray], eager_out: Sequence[Tensor]) -> float:
    """max |ORT - eager| over every output (inf when the shapes or counts differ)."""
    if len(ort_out) != len(eager_out):
        return float("inf")
    worst = 0.0
    for got, want in zip(ort_out, eager_out, strict=True):
        want_np = want.detach().to("cpu", torch.float32).numpy()
        if got.shape != want_np.shape:
            return float("inf")
        got = got.astype(np.float32)
        finite = np.isfinite(got) & np.isfinite(want_np)
        if not np.array_equal(got[~finite], want_np[~finite], equal_nan=True):
            return float("inf")  # a NaN or inf on one side only
        if finite.any():
            worst = max(worst, float(np.abs(got[finite] - want_np[finite]).max()))
    return worst


def verify_onnx(
    path: str | Path, module: nn.Module, inputs: Sequence[Tensor], session: Any = None
) -> list[float]:
    """Max |ORT - eager| over all outputs for each of `inputs` ((B, C, H, W) tensors), with
    onnxruntime on the CPU (`session`, or a new `ort_session(path)`) and `module` in eval
    mode under no_grad."""
    session = session if session is not None else ort_session(path)
    return [max_abs_diff(run_ort(session, x), eager_outputs(module, x)) for x in inputs]
