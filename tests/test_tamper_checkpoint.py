"""A tamper checkpoint rebuilds its own network."""

from __future__ import annotations

import pytest
import torch

from lightattn.tamper import create_tamper_model
from lightattn.tamper.checkpoint import load_tamper_model, save_tamper_model
from lightattn.train.checkpoint import save_weights


def test_round_trip_rebuilds_the_network(tmp_path):
    kwargs = {"variant": "stdc1", "width": 0.25, "inner": "linear"}
    model = create_tamper_model(**kwargs).eval()
    save_tamper_model(model, tmp_path / "m.safetensors", kwargs, {"note": "x"})
    loaded, meta = load_tamper_model(tmp_path / "m.safetensors")
    assert meta["model"] == kwargs and meta["note"] == "x"
    x = torch.rand(1, 3, 40, 56)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["mask_logits"], model(x)["mask_logits"])


def test_other_files_are_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_tamper_model(tmp_path / "none.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(ValueError, match="junk.safetensors"):
        load_tamper_model(tmp_path / "junk.safetensors")
    save_weights(torch.nn.Linear(2, 2), tmp_path / "other.safetensors", {"config": {}})
    with pytest.raises(ValueError, match="not a lightattn tamper checkpoint"):
        load_tamper_model(tmp_path / "other.safetensors")
