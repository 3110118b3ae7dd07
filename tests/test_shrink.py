"""lightattn shrink: step parsing, each structural step's reduction and weight carry-over,
distillation, the end-to-end pipeline on a tiny checkpoint, and bad input."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict

import pytest
import torch

from lightattn.cli.main import main
from lightattn.models import create_model
from lightattn.shrink import (
    Arch,
    DistillConfig,
    KDSet,
    distill,
    drop_blocks,
    head_mlp_groups,
    kd_loss,
    load_shrunk,
    mean_kd_loss,
    narrow,
    parse_steps,
    prune,
    prune_in_place,
    resize_input,
    swap_attention,
)
from lightattn.shrink.groups import pad_state, slice_state
from lightattn.shrink.measure import count_macs, count_params, weight_megabytes
from lightattn.shrink.pipeline import quantize
from lightattn.train import TrainConfig, load_checkpoint, train

KWARGS = {
    "patch_size": 2, "embed_dim": 16, "depths": (2, 2), "num_heads": (2, 4), "window_size": 4,
}  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny(attn: str | None = None, **changes) -> tuple[torch.nn.Module, Arch]:
    kwargs = {**KWARGS, **changes}
    config = TrainConfig(
        data="digits", out="unused", model="swin", model_kwargs=kwargs, attn=attn, img_size=16
    )
    arch = Arch(json.loads(config.to_json()), num_classes=3, in_chans=1)
    torch.manual_seed(0)
    return arch.build().eval(), arch


def toy_batches(n: int = 32, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, size, size, generator=g), torch.randint(0, 3, (n,), generator=g)


def ce_batches(n: int = 32) -> list:
    return [toy_batches(n)]


def ce(logits, labels):
    return torch.nn.functional.cross_entropy(logits, labels)


def sizes(model, img: int = 16) -> tuple[int, int]:
    return count_params(model), count_macs(model, img, 1)


# steps ----------------------------------------------------------------------------------------


def test_parse_steps_defaults_and_values():
    steps = parse_steps("depth,width=0.25,resolution=12,attention=hilo,prune=0.3,int8")
    assert [(s.kind, s.value) for s in steps] == [
        ("depth", 0.5), ("width", 0.25), ("resolution", 12), ("attention", "hilo"),
        ("prune", 0.3), ("int8", None),
    ]  # fmt: skip
    assert parse_steps("resolution=0.5")[0].value == 0.5


@pytest.mark.parametrize(
    "text, words",
    [
        ("depth,shrinkify", "unknown step 'shrinkify'"),
        ("width=2", "width='2'"),
        ("prune=abc", "prune='abc'"),
        ("resolution=1.5", "resolution='1.5'"),
        ("attention=nope", "attention=nope"),
        ("attention", "attention"),
        ("int8,depth", "int8 must be the last"),
        ("prune,width", "width cannot follow prune"),
        ("int8=1", "int8 takes no value"),
        ("", "at least one step"),
    ],
)
def test_parse_steps_rejects(text, words):
    with pytest.raises(ValueError) as err:
        parse_steps(text)
    assert words in str(err.value)
    assert "\n" not in str(err.value)


# each step reduces what it claims ---------------------------------------------------------


def test_depth_drops_blocks_and_keeps_their_weights():
    model, arch = tiny()
    seen = []

    def loss(m):  # prefers keeping block 1 of every stage
        seen.append(m)
        return sum(s.blocks[0].mlp.fc1.weight.abs().sum().item() for s in m.stages)

    for stage in model.stages:  # make block 1 the one with the small fc1
        with torch.no_grad():
            stage.blocks[1].mlp.fc1.weight.mul_(0.01)
    new, new_arch, _ = drop_blocks(model, arch, 0.5, loss)
    assert [s.depth for s in new.specs] == [1, 1]
    assert new_arch.config["model_kwargs"]["depths"] == [1, 1]
    assert len(seen) == 4  # two subsets tried per stage
    for old_stage, new_stage in zip(model.stages, new.stages, strict=True):
        assert torch.equal(new_stage.blocks[0].mlp.fc1.weight, old_stage.blocks[1].mlp.fc1.weight)
    (p0, m0), (p1, m1) = sizes(model), sizes(new)
    assert p1 < p0 and m1 < m0
    rebuilt = new_arch.build()
    rebuilt.load_state_dict(new.state_dict())  # the arch rebuilds exactly this model


def test_width_quarters_linear_cost_and_keeps_the_important_channels():
    model, arch = tiny()
    mlp = model.stages[1].blocks[0].mlp
    with torch.no_grad():  # the even hidden channels carry nothing: Taylor scores 0
        mlp.fc1.weight[0::2] = 0
        mlp.fc1.bias[0::2] = 0
    new, new_arch, _ = narrow(model, arch, 0.5, ce_batches(), ce)
    assert [s.dim for s in new.specs] == [8, 16]
    assert new_arch.config["model_kwargs"]["num_heads"] == [1, 2]
    assert new.stages[1].blocks[0].attn.num_heads == 2
    assert new.stages[1].blocks[0].attn.head_dim == model.stages[1].blocks[0].attn.head_dim
    kept = new.stages[1].blocks[0].mlp.fc1
    assert kept.out_features == 64 and bool((kept.weight.abs().sum(1) > 0).all())
    (p0, m0), (p1, m1) = sizes(model), sizes(new)
    assert p1 < 0.35 * p0 and m1 < 0.4 * m0
    new_arch.build().load_state_dict(new.state_dict())


def test_width_single_head_stage_narrows_the_head():
    model, arch = tiny(num_heads=(1, 2))
    new, _, _ = narrow(model, arch, 0.5, ce_batches(), ce)
    attn = new.stages[0].blocks[0].attn
    assert (attn.num_heads, attn.head_dim, new.specs[0].dim) == (1, 8, 8)
    assert torch.isfinite(new(toy_batches(2)[0])).all()


@pytest.mark.parametrize("attn", [None, "hilo"])
def test_prune_equals_zeroed_units_and_cuts_cost(attn):
    model, arch = tiny(attn)
    new, new_arch, _ = prune(model, arch, 0.3, ce_batches(), ce)
    groups = head_mlp_groups(model)
    keep = {k: torch.tensor(v) for k, v in new_arch.pruned.items()}
    for g in groups:
        if g.kind == "mlp":
            assert len(keep[g.key]) == round(0.7 * g.size)
    state = model.state_dict()
    zeroed = pad_state(slice_state(state, groups, keep), {k: v.shape for k, v in state.items()},
                       groups, keep)  # fmt: skip
    reference = copy.deepcopy(model)
    reference.load_state_dict(zeroed)
    x = toy_batches(4)[0]
    with torch.no_grad():
        torch.testing.assert_close(new(x), reference(x), rtol=1e-5, atol=1e-6)
    (p0, m0), (p1, m1) = sizes(model), sizes(new)
    assert p1 < p0 and m1 < m0
    rebuilt = new_arch.build()
    rebuilt.load_state_dict(new.state_dict())
    if attn is None:
        assert any(b.attn.num_heads < 4 for b in new.stages[1].blocks)


def test_attention_swap_carries_the_weights_over():
    # one 8x8 window covers every map: window attention is plain softmax attention there
    model, arch = tiny(window_size=8)
    for m in model.modules():
        if getattr(m, "rel_pos_table", None) is not None:
            torch.nn.init.zeros_(m.rel_pos_table)
    new, _, note = swap_attention(model, arch, "mhsa")
    assert "carried over" in note
    x = toy_batches(3)[0]
    with torch.no_grad():
        torch.testing.assert_close(new(x), model(x), rtol=1e-4, atol=1e-5)
    hilo, _, _ = swap_attention(model, arch, "hilo")
    a, b = model.stages[1].blocks[0].attn, hilo.stages[1].blocks[0].attn
    ch = b.hifi_heads * b.head_dim
    assert torch.equal(b.hifi_qkv.weight[:ch], a.qkv.weight[:ch])
    assert torch.equal(b.lofi_q.weight, a.qkv.weight[ch : a.dim])
    assert count_params(hilo) < count_params(model)  # per-branch projections


def test_resolution_cuts_macs_not_params():
    model, arch = tiny()
    new_arch = resize_input(arch, 0.75)
    assert new_arch.img_size == 12
    assert count_macs(model, 12, 1) < 0.7 * count_macs(model, 16, 1)
    with pytest.raises(ValueError, match="not below"):
        resize_input(arch, 20)


def test_int8_cuts_weight_bytes():
    model, _ = tiny(embed_dim=32)
    q = quantize(model)
    assert weight_megabytes(q) < 0.5 * weight_megabytes(model)
    x = toy_batches(2)[0]
    with torch.no_grad():
        assert (q(x).argmax(1) == model(x).argmax(1)).float().mean() >= 0.5


# distillation ---------------------------------------------------------------------------------


def test_kd_loss_zero_at_teacher_and_distill_lowers_it():
    logits = torch.randn(5, 3)
    assert float(kd_loss(logits, logits, logits.argmax(1), 4.0, 1.0)) == pytest.approx(0, abs=1e-6)
    teacher, _ = tiny()
    student, _ = tiny(depths=(1, 1))
    with torch.no_grad():
        teacher.head.weight.mul_(50)  # confident, distinct targets
    images, labels = toy_batches(48)
    with torch.no_grad():
        data = KDSet(images, teacher(images), labels)
    cfg = DistillConfig(steps=30, batch_size=16, lr=3e-3, alpha=1.0)
    before = mean_kd_loss(student, data, cfg)
    losses = distill(student, data, cfg)
    assert len(losses) == 30
    assert mean_kd_loss(student, data, cfg) < 0.7 * before


# the pipeline ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-run")
    cfg = TrainConfig(
        data="digits", out=str(out), model="swin", model_kwargs=dict(KWARGS), img_size=16,
        epochs=1, max_steps=2, batch_size=32, progress=False, threads=1,
    )  # fmt: skip
    train(cfg)
    return out / "final.safetensors"


def test_pipeline_end_to_end(checkpoint, tmp_path, capsys):
    out = tmp_path / "shrink"
    steps = "depth,width,resolution=12,attention=hilo,prune=0.3,int8"
    code = main([
        "shrink", str(checkpoint), "--steps", steps, "--out", str(out), "--ft-steps", "3",
        "--calib-images", "32", "--timing-rounds", "1", "--latency-batch", "2", "--no-ort",
        "--quiet",
    ])  # fmt: skip
    assert code == 0
    for name in ("shrink.md", "shrink.json", "shrink.csv", "shrink.png", "final.safetensors"):
        assert (out / name).is_file(), name
    result = json.loads((out / "shrink.json").read_text())
    rows = {r["step"]: r for r in result["rows"]}
    order = [r["step"] for r in result["rows"]]
    assert order == ["start", "depth=0.5", "width=0.5", "resolution=12", "attention=hilo",
                     "prune=0.3", "int8"]  # fmt: skip
    assert rows["depth=0.5"]["params"] < rows["start"]["params"]
    assert rows["width=0.5"]["macs"] < rows["depth=0.5"]["macs"]
    assert rows["resolution=12"]["params"] == rows["width=0.5"]["params"]
    assert rows["resolution=12"]["macs"] < rows["width=0.5"]["macs"]
    assert rows["prune=0.3"]["params"] < rows["attention=hilo"]["params"]
    assert rows["int8"]["weight_mb"] < rows["prune=0.3"]["weight_mb"]
    assert all(r["eager_b1"] > 0 for r in result["rows"])
    assert "| prune=0.3 |" in capsys.readouterr().out
    # the saved model: `lightattn eval` loads it (zeros at the pruned units) and scores what
    # the compact model scored; load_shrunk cuts it again
    compact, meta = load_shrunk(out / "final.safetensors", int8=False)
    assert count_params(compact) == rows["prune=0.3"]["params"]
    padded, _ = load_checkpoint(out / "final.safetensors")
    assert count_params(padded) > count_params(compact)
    x = toy_batches(3, size=12)[0]
    with torch.no_grad():
        torch.testing.assert_close(padded(x), compact(x), rtol=1e-5, atol=1e-6)
    assert main(["eval", str(out / "final.safetensors"), "--out", str(tmp_path / "ev")]) == 0
    ev = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert ev["acc"] == pytest.approx(rows["prune=0.3"]["test_acc"], abs=1e-6)
    assert meta["shrink"]["int8"] is True


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "steps, words",
    [("depth,fold", "unknown step 'fold'"), ("width=1.5", "width='1.5'"),
     ("resolution=64", "not below")],
)  # fmt: skip
def test_bad_steps_exit_2(checkpoint, tmp_path, capsys, steps, words):
    code = main(["shrink", str(checkpoint), "--steps", steps, "--out", str(tmp_path / "o")])
    assert code == 2
    assert words in one_error_line(capsys)
    assert not (tmp_path / "o").exists()


def test_mismatched_checkpoint_exit_2(checkpoint, tmp_path, capsys):
    from lightattn.train.checkpoint import read_weights, save_weights

    _, meta = read_weights(checkpoint)
    other = create_model("swin", **{**KWARGS, "embed_dim": 8}, num_classes=10, in_chans=1)
    bad = tmp_path / "bad.safetensors"
    save_weights(other, bad, meta)
    code = main(["shrink", str(bad), "--steps", "depth", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "does not fit" in one_error_line(capsys)
    code = main(["shrink", str(tmp_path / "none.safetensors"), "--steps", "depth",
                 "--out", str(tmp_path / "o")])  # fmt: skip
    assert code == 2
    assert "does not exist" in one_error_line(capsys)


def test_other_data_with_other_classes_exit_2(checkpoint, tmp_path, capsys):
    folder = tmp_path / "imgs"
    from PIL import Image

    for cls in ("a", "b"):
        (folder / cls).mkdir(parents=True)
        for i in range(5):
            Image.new("L", (8, 8), color=i * 40).save(folder / cls / f"{i}.png")
    code = main(["shrink", str(checkpoint), "--steps", "depth", "--data", str(folder),
                 "--out", str(tmp_path / "o")])  # fmt: skip
    assert code == 2
    assert "2 classes" in one_error_line(capsys)


def test_distill_config_rejects_bad_values():
    with pytest.raises(ValueError, match="kd_alpha"):
        DistillConfig(alpha=1.5)
    assert asdict(DistillConfig())["temperature"] == 4.0


def test_prune_in_place_then_rebuild_round_trip():
    model, arch = tiny("hilo")
    new, new_arch, _ = prune(model, arch, 0.5, ce_batches(), ce)
    fresh = new_arch.build()
    fresh.load_state_dict(new.state_dict())
    x = toy_batches(2)[0]
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), new(x))
    again = copy.deepcopy(new)
    prune_in_place(again, head_mlp_groups(again), {})
    assert count_params(again) == count_params(new)


@pytest.mark.slow
def test_pipeline_with_onnx_runtime(checkpoint, tmp_path):
    """Exports every row at batch 1 and 2 (about a minute of exports)."""
    out = tmp_path / "shrink"
    code = main([
        "shrink", str(checkpoint), "--steps", "prune=0.5,int8", "--out", str(out),
        "--ft-steps", "2", "--calib-images", "16", "--timing-rounds", "1",
        "--latency-batch", "2", "--quiet",
    ])  # fmt: skip
    assert code == 0
    result = json.loads((out / "shrink.json").read_text())
    for row in result["rows"]:
        assert row["ort_b1"] > 0 and row["ort_b2"] > 0, row
    assert (out / "final.onnx").is_file() and (out / "final-int8.onnx").is_file()
    from lightattn.export.onnx import ort_session

    compact, _ = load_shrunk(out / "final.safetensors", int8=False)
    session = ort_session(out / "final.onnx", threads=1)
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        expected = compact(x).numpy()
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert abs(got - expected).max() < 1e-4
