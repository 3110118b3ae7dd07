"""`lightattn models`: the named backbones with sizes, published figures and img/s."""

from __future__ import annotations

import json

from lightattn.cli.main import main


def run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_models_json_gives_sizes_beside_the_published_ones(capsys):
    code, out, _ = run(["models", "swin_t", "pvt_v2_b0", "--no-time", "--json"], capsys)
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert set(rows) == {"swin_t", "pvt_v2_b0"}
    assert abs(rows["swin_t"]["params"] / 1e6 - 28.29) / 28.29 < 0.01
    assert abs(rows["swin_t"]["gmacs"] - 4.49) / 4.49 < 0.03
    assert rows["pvt_v2_b0"]["top1"] == 70.5


def test_models_times_each_batch_size(capsys):
    argv = ["models", "pvt_v2_b0", "--size", "64", "--batch", "1", "2", "--min-runs", "1",
            "--min-time", "0.01", "--json"]  # fmt: skip
    code, out, _ = run(argv, capsys)
    assert code == 0
    (row,) = json.loads(out)
    assert row["img_s_b1"] > 0 and row["img_s_b2"] > 0
    assert abs(row["img_s_b2"] - 2000 / row["ms_b2"]) < 1e-6 * row["img_s_b2"]


def test_models_table_and_unknown_name(capsys):
    code, out, _ = run(["models", "swin_t", "--no-time"], capsys)
    assert code == 0 and "swin_t" in out and "28.29M" in out
    code, _, err = run(["models", "swin_x"], capsys)
    assert code == 2 and "unknown model(s) ['swin_x']" in err
