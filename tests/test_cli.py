"""`lightattn bench` / `lightattn list` end to end: smoke runs on tiny maps for every registered
mechanism, output files and their schema, --compare, exit codes, one-line errors."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
import torch

import lightattn
from lightattn.bench import machine
from lightattn.cli import main
from lightattn.cli.args import DEFAULT, build_parser
from lightattn.cli.bench_cmd import config_from
from lightattn.layers import _registry

FAST = ["--batch", "1", "--min-time", "0", "--min-runs", "1"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_main(argv: list[str]) -> tuple[int, str, str]:
    """main(argv) in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module", autouse=True)
def fixed_gemm():
    """A fixed 100 GFLOP/s GEMM rate instead of measuring it twice per run: no test here
    looks at it (test_bench does)."""
    from lightattn.bench import runner

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "gemm_rate", lambda device, dtype, timer, size: (100e9, 1024, None))
        yield


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[Path, dict]:
    """One run of every registered mechanism on 7x7 and 9x9, with --out and --json."""
    out = tmp_path_factory.mktemp("bench")
    code, stdout, _ = run_main(["bench", "--sizes", "7", "9", *FAST, "--out", str(out), "--json"])
    assert code == 0
    return out, json.loads(stdout)


def test_smoke_runs_every_mechanism_at_every_size(smoke):
    _, data = smoke
    cases = {(r["mechanism"], r["size"]) for r in data["rows"]}
    names = [*lightattn.list_attention(), "window+shift"]
    assert cases == {(n, s) for n in names for s in ("7x7", "9x9")}
    assert data["rows"][0]["mechanism"] == "mhsa"  # the baseline leads each size
    for r in data["rows"]:
        assert r["status"] == "ok", (r["mechanism"], r["size"], r["note"])


def test_json_rows_record_what_ran(smoke):
    """Machine facts and each row's module facts (the numbers themselves are checked against
    a fake clock in test_bench.test_json_numbers_from_a_known_clock)."""
    _, data = smoke
    for key in ("cpu", "cores", "threads", "torch", "dtype", "device", "date"):
        assert key in data["machine"]
    assert data["machine"]["threads"] == torch.get_num_threads()
    assert data["config"]["threads"] == torch.get_num_threads()
    assert data["config"]["heads"] == 2 and data["config"]["layout"] == "nchw"
    for r in data["rows"]:
        name, kwargs = (("window", {"shift": True}) if r["mechanism"] == "window+shift"
                        else (r["mechanism"], {}))  # fmt: skip
        module = lightattn.create_attention(name, 64, **kwargs).eval()
        assert r["attention"] == name and r["heads"] == module.num_heads == 2
        assert r["macs"] == module.macs(r["h"], r["w"]) * r["batch"]
        assert r["useful_macs"] == module.useful_macs(r["h"], r["w"]) * r["batch"]
        assert r["params"] == sum(p.numel() for p in module.parameters())
        assert r["tokens"] == r["h"] * r["w"] and r["layout"] == "nchw"
        assert r["min_ms"] <= r["time_ms"] <= r["max_ms"]
        assert r["peak_mem_bytes"] > 0 and r["ref_peak_mem_bytes"] > 0
    shifted = next(r for r in data["rows"] if r["mechanism"] == "window+shift")
    assert shifted["settings"]["shift"] is True


def test_csv_matches_json(smoke):
    out, data = smoke
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(data["rows"])
    for row, jrow in zip(rows, data["rows"], strict=True):
        assert row["mechanism"] == jrow["mechanism"] and row["size"] == jrow["size"]
        assert float(row["time_ms"]) == pytest.approx(jrow["time_ms"])
        assert int(row["macs"]) == jrow["macs"]
    saved = json.loads((out / "results.json").read_text())
    assert saved["rows"] == data["rows"]
    md = (out / "results.md").read_text()
    assert "| mechanism |" in md and "window" in md


@pytest.mark.parametrize("name", ["latency.png", "memory.png"])
def test_plots_are_valid_png(smoke, name):
    out, _ = smoke
    path = out / name
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert path.stat().st_size < 200_000


def test_table_printed_without_json(tmp_path):
    code, stdout, _ = run_main(["bench", "--attn", "window", "--sizes", "7", *FAST])
    assert code == 0
    assert "lightattn bench" in stdout and "window" in stdout and "mhsa" in stdout
    assert "torch threads" in stdout


def test_compare_ratio_and_fail_if_slower(smoke, tmp_path):
    _, data = smoke
    old = {**data, "rows": [dict(r) for r in data["rows"] if r["mechanism"] in ("mhsa", "linear")]}
    for r in old["rows"]:
        r["time_ms"] = r["max_ms"] = 1e-6  # the new run is surely slower
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    args = ["bench", "--attn", "linear", "--sizes", "7", *FAST, "--json", "--compare", str(path)]
    code, stdout, stderr = run_main([*args, "--fail-if-slower", "10"])
    assert code == 1
    assert "slower by more than 10% and beyond the runs' spread" in stderr
    rows = json.loads(stdout)["rows"]
    assert all(r["compare_ratio"] == pytest.approx(r["time_ms"] / 1e-6) for r in rows)
    for r in old["rows"]:
        r["time_ms"] = r["max_ms"] = 1e9  # now surely faster
    path.write_text(json.dumps(old))
    code, stdout, _ = run_main([*args, "--fail-if-slower", "10"])
    assert code == 0
    assert all(r["compare_ratio"] < 1 for r in json.loads(stdout)["rows"])


def test_backward_mode(tmp_path):
    # 8x8: a size no forward-only test ran window at (window caches per-shape index tensors;
    # one made under inference_mode cannot be saved for backward)
    code, stdout, _ = run_main(["bench", "--attn", "window", "--sizes", "8", *FAST,
                                "--backward", "--json"])  # fmt: skip
    assert code == 0
    data = json.loads(stdout)
    assert data["config"]["mode"] == "forward+backward"
    for r in data["rows"]:
        assert r["status"] == "ok", r["note"]
        assert r["mode"] == "forward+backward" and r["time_ms"] > 0
    # that backward really ran is checked in test_bench.test_backward_runs_backward, its
    # rates in test_bench.test_json_numbers_from_a_known_clock


def test_compile_failure_is_a_row_not_a_traceback(monkeypatch):
    class Broken(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self._orig_mod = inner

        def forward(self, x):
            raise RuntimeError("backend exploded")

    monkeypatch.setattr(torch, "compile", lambda m: Broken(m))
    code, stdout, stderr = run_main(["bench", "--attn", "window", "--sizes", "7", *FAST,
                                     "--compile", "--json"])  # fmt: skip
    assert code == 0 and "Traceback" not in stderr
    for r in json.loads(stdout)["rows"]:
        assert r["status"] == "error"
        assert r["note"].startswith("compile failed: RuntimeError: backend exploded")


def test_compile_runtime_error_is_not_a_compile_failure(monkeypatch):
    """The first (compiling) call works and is kept out of the case limit; a later call's
    error is reported as a runtime error."""
    import time

    class Flaky(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self._orig_mod = inner
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            if self.calls == 1:
                time.sleep(0.4)  # "compiling": not one call of the case
                return self._orig_mod(x)
            if isinstance(self._orig_mod, lightattn.layers.get_attention_class("window")):
                raise RuntimeError("kernel exploded")
            return self._orig_mod(x)

    monkeypatch.setattr(torch, "compile", lambda m: Flaky(m))
    code, stdout, stderr = run_main(["bench", "--attn", "window", "--sizes", "7", *FAST,
                                     "--compile", "--json", "--no-reference",
                                     "--max-case-seconds", "0.3"])  # fmt: skip
    assert code == 0 and "Traceback" not in stderr
    rows = {r["mechanism"]: r for r in json.loads(stdout)["rows"]}
    assert rows["mhsa"]["status"] == "ok", rows["mhsa"]["note"]
    compile_s = re.search(r"compile (\d+\.\d) s", rows["mhsa"]["note"])
    assert compile_s and float(compile_s.group(1)) >= 0.4  # the sleep, more on a busy machine
    assert rows["window"]["status"] == "error"
    assert rows["window"]["note"].startswith("error: RuntimeError: kernel exploded")


def test_kwargs_reach_the_module():
    code, stdout, _ = run_main(["bench", "--attn", "window", "--sizes", "7", *FAST, "--json",
                                "--kwargs", "window:window_size=3",
                                "--kwargs", "window:shift=true"])  # fmt: skip
    assert code == 0
    row = next(r for r in json.loads(stdout)["rows"] if r["mechanism"] == "window")
    assert row["settings"]["window_size"] == 3 and row["settings"]["shift"] is True


def test_preset_litv2_small(monkeypatch):
    """The preset's table and ratios (shrunk: C=48 and batch 1 instead of 768 and 64)."""
    code, stdout, _ = run_main(["bench", "--preset", "litv2-cpu", "--dim", "48", *FAST,
                                "--no-reference", "--json"])  # fmt: skip
    assert code == 0
    data = json.loads(stdout)
    assert {r["mechanism"] for r in data["rows"]} == {"hilo", "window", "sra", "mhsa"}
    assert all(r["size"] == "14x14" and r["heads"] == 12 for r in data["rows"])
    hilo = next(r for r in data["rows"] if r["mechanism"] == "hilo")
    assert hilo["settings"]["window_size"] == 2 and hilo["settings"]["alpha"] == 0.9
    preset = data["preset"]
    assert preset["ratios"]["hilo/window"]["published"] == 1.6
    assert preset["ratios"]["hilo/sra"]["published"] == 1.4
    assert preset["images_per_s"]["hilo"]["published"] == 1029
    ratio = preset["ratios"]["hilo/sra"]["measured"]
    assert ratio == pytest.approx(
        hilo["images_per_s"]
        / next(r["images_per_s"] for r in data["rows"] if r["mechanism"] == "sra")
    )


def test_preset_with_attn_keeps_only_its_kwargs():
    code, stdout, stderr = run_main(["bench", "--preset", "litv2-cpu", "--attn", "hilo",
                                     "--dim", "48", "--sizes", "7", *FAST, "--no-reference",
                                     "--json"])  # fmt: skip
    assert code == 0, stderr
    data = json.loads(stdout)
    assert {r["mechanism"] for r in data["rows"]} == {"hilo", "mhsa"}
    assert set(data["config"]["kwargs"]) == {"hilo"}
    warning = next(line for line in stderr.splitlines() if line.startswith("warning"))
    assert "dim 768 -> 48" in warning and "batch 64 -> 1" in warning
    assert "sizes ['14x14'] -> ['7x7']" in warning
    # the published numbers are for 14x14: nothing measured at 7x7 is put beside them
    assert data["preset"]["images_per_s"]["hilo"]["measured"] is None
    assert data["preset"]["differences"]


def test_preset_table_labels_from_the_run():
    code, stdout, stderr = run_main(["bench", "--preset", "litv2-cpu", "--attn", "hilo",
                                     "--dim", "48", *FAST, "--no-reference",
                                     "--kwargs", "hilo:alpha=0.5"])  # fmt: skip
    assert code == 0, stderr
    assert "hilo (window_size=2, alpha=0.5) img/s" in stdout
    assert "hilo kwargs" in stderr


def test_preset_names_missing_mechanisms(monkeypatch):
    monkeypatch.delitem(_registry._REGISTRY, "hilo")
    monkeypatch.delitem(_registry._REGISTRY, "sra")
    code, stdout, stderr = run_main(["bench", "--preset", "litv2-cpu"])
    assert code == 2 and stdout == ""
    assert stderr.strip().splitlines() == [
        "lightattn bench: error: preset litv2-cpu needs mechanism(s) not registered: hilo, sra"
    ]


BAD_ARGS = [
    (["bench", "--attn", "nosuch"], "unknown attention name='nosuch'"),
    (["bench", "--attn", "windw"], "did you mean 'window'"),
    (["bench", "--sizes", "0"], "must be positive"),
    (["bench", "--sizes", "3x-2"], "must be positive"),
    (["bench", "--sizes", "big"], "must be S (meaning S×S) or HxW"),
    (["bench", "--batch", "0"], "must be a positive integer"),
    (["bench", "--dtype", "fp64"], "invalid choice"),
    (["bench", "--kwargs", "window"], "must look like name:key=value"),
    (["bench", "--kwargs", "window:=3"], "must look like name:key=value"),
    (["bench", "--attn", "window", "--kwargs", "window:nosuch=1"], "unknown argument(s)"),
    (["bench", "--attn", "window", "--kwargs", "window:window_size=0"], "window_size=0"),
    (["bench", "--attn", "window", "--kwargs", "sra:sr_ratio=2"], "not benchmarked"),
    (["bench", "--dim", "30", "--heads", "4"], "dim=30 is not divisible by num_heads=4"),
    (["bench", "--fail-if-slower", "5"], "--fail-if-slower needs --compare"),
    (["bench", "--compare", "/nonexistent/results.json"], "cannot read"),
    (["bench", "--min-time", "-1"], "must be >= 0"),
    (["bench", "--time-budget", "inf"], "must be a finite number"),
    (["bench", "--max-memory-gb", "nan"], "must be a finite number"),
    (["bench", "--nosuch"], "unrecognized arguments"),
    (["bench", "--layout", "nhwc"], "invalid choice"),
    (["bench", "--variant", "w8"], "must look like LABEL=NAME"),
    (["bench", "--variant", "w 8=window"], "must look like LABEL=NAME"),
    (["bench", "--variant", "w8=windw"], "did you mean 'window'"),
    (["bench", "--variant", "mhsa=window"], "has the name of a registered mechanism"),
    (["bench", "--attn", "window+shiftt"], "unknown attention name='window+shiftt'"),
    ([], "choose a command"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_ARGS, ids=[" ".join(a) for a, _ in BAD_ARGS])
def test_bad_arguments_exit_2_with_one_line(argv, message):
    code, stdout, stderr = run_main(argv)
    assert code == 2
    assert stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert message in lines[0]
    assert "Traceback" not in stderr


def test_bad_compare_file(tmp_path):
    path = tmp_path / "old.json"
    path.write_text("{not json")
    code, _, stderr = run_main(["bench", "--compare", str(path)])
    assert code == 2 and "not valid JSON" in stderr and len(stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [({"config": [], "rows": []}, "'config' must be an object"),
     ({"config": {}, "rows": [1, 2]}, "'rows' must be a list of objects")],
)  # fmt: skip
def test_malformed_compare_file(tmp_path, content, message):
    path = tmp_path / "old.json"
    path.write_text(json.dumps(content))
    code, _, stderr = run_main(["bench", "--compare", str(path)])
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1


def test_case_lost_since_the_earlier_run_fails_the_gate(smoke, tmp_path):
    _, data = smoke
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    code, _, stderr = run_main(["bench", "--attn", "linear", "--sizes", "7", *FAST,
                                "--compare", str(path), "--fail-if-slower", "1e9",
                                "--max-memory-gb", "1e-9"])  # fmt: skip
    assert code == 1
    assert "measured in the earlier run, not in this one: mhsa 7x7 skipped" in stderr


def test_bad_out_fails_before_the_run(tmp_path, monkeypatch):
    from lightattn.cli import bench_cmd

    monkeypatch.setattr(bench_cmd, "run_benchmark", lambda *a: pytest.fail("ran"))
    existing = tmp_path / "file"
    existing.write_text("")
    for out in (existing, existing / "sub"):
        code, stdout, stderr = run_main(["bench", "--sizes", "7", *FAST, "--out", str(out)])
        assert code == 2 and stdout == "" and "Traceback" not in stderr
        assert len(stderr.strip().splitlines()) == 1
        assert "--out" in stderr and "cannot create directory" in stderr


@pytest.mark.parametrize("error", [RuntimeError("huge allocation"), MemoryError()])
def test_build_errors_are_one_line(monkeypatch, error):
    def boom(*args, **kwargs):
        raise error

    monkeypatch.setattr(lightattn, "create_attention", boom)
    code, _, stderr = run_main(["bench", "--attn", "window", "--sizes", "7", *FAST])
    assert code == 2 and "Traceback" not in stderr
    assert stderr.startswith("lightattn bench: error: cannot build 'mhsa'")
    assert len(stderr.strip().splitlines()) == 1


def test_reference_copy_errors_are_one_line(monkeypatch):
    from lightattn.bench import runner

    def boom(module):
        raise MemoryError("no room")

    monkeypatch.setattr(runner.copy, "deepcopy", boom)
    code, _, stderr = run_main(["bench", "--attn", "window", "--sizes", "7", *FAST])
    assert code == 2 and "Traceback" not in stderr
    assert "cannot copy 'mhsa' for its reference path: MemoryError: no room" in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_cuda_without_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, stderr = run_main(["bench", "--device", "cuda"])
    assert code == 2
    assert stderr.strip() == (
        "lightattn bench: error: --device cuda was requested but no CUDA GPU is available"
    )


def test_dtype_the_device_cannot_do(monkeypatch):
    def probe(dtype, device):
        raise RuntimeError("\"addmm_impl_cpu_\" not implemented for 'Half'")

    monkeypatch.setattr(machine, "probe_dtype", probe)
    code, _, stderr = run_main(["bench", "--dtype", "fp16"])
    assert code == 2
    assert stderr.strip().startswith("lightattn bench: error: --dtype fp16 is not supported on cpu")
    assert len(stderr.strip().splitlines()) == 1


def test_list_shows_every_mechanism():
    code, stdout, _ = run_main(["list", "--json"])
    assert code == 0
    entries = json.loads(stdout)
    assert [e["name"] for e in entries] == lightattn.list_attention()
    window = next(e for e in entries if e["name"] == "window")
    assert window["settings"]["window_size"] == 7
    code, stdout, _ = run_main(["list"])
    assert code == 0 and "window_size=7" in stdout


def test_python_dash_m_entry_point():
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-m", "lightattn", "bench", "--attn", "window", "--sizes", "5x6", *FAST,
         "--no-reference", "--json"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert {(r["mechanism"], r["size"]) for r in data["rows"]} == {
        ("mhsa", "5x6"),
        ("window", "5x6"),
    }
    assert "reference not run" in data["rows"][0]["note"]
    bad = subprocess.run([sys.executable, "-m", "lightattn", "bench", "--sizes", "0"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ([], (2.0, 7, 60.0, 600.0)),
        (
            ["--min-time", "0.5", "--min-runs", "4", "--max-case-seconds", "9",
             "--time-budget", "0"],
            (0.5, 4, 9.0, 0.0),
        ),
    ],
)  # fmt: skip
def test_preset_measures_longer_unless_told(extra, expected):
    """A preset times at least 7 runs and 2 s (the published run had 30 iterations) with a
    case limit and budget that fit them; explicit options win. Without a preset: the defaults."""

    def measurement(argv: list[str]) -> tuple:
        config, _ = config_from(build_parser().parse_args(argv))
        return config.min_time, config.min_runs, config.max_case_seconds, config.time_budget

    assert measurement(["bench", "--preset", "litv2-cpu", *extra]) == expected
    assert measurement(["bench"]) == (0.25, 7, DEFAULT.max_case_seconds, DEFAULT.time_budget)


@pytest.mark.parametrize(("argv", "heads"), [([], 2), (["--dim", "128"], 4), (["--dim", "48"], 1),
                                             (["--heads", "4"], 4)])  # fmt: skip
def test_heads_default_is_the_library_default(argv, heads):
    """No --heads: dim // 32 (1 when 32 does not divide dim), the same as create_attention."""
    code, stdout, stderr = run_main(["bench", "--attn", "window", "--sizes", "7", *FAST,
                                     "--no-reference", "--json", *argv])  # fmt: skip
    assert code == 0, stderr
    data = json.loads(stdout)
    assert data["config"]["heads"] == heads
    assert data["config"]["heads_default"] is (argv[:1] != ["--heads"])
    assert {r["heads"] for r in data["rows"]} == {heads}
    assert f"{heads} heads" in stderr


@pytest.mark.parametrize(("argv", "heads"), [([], 2), (["--dim", "128"], 4),
                                             (["--heads", "1"], 1)])  # fmt: skip
def test_list_heads_default_is_the_library_default(argv, heads):
    code, stdout, _ = run_main(["list", "--json", *argv])
    assert code == 0
    assert {e["num_heads"] for e in json.loads(stdout) if e["name"] != "position"} == {heads}
    code, stdout, _ = run_main(["list", *argv])
    assert code == 0 and f"heads={heads}" in stdout


def test_list_summaries_are_whole_sentences():
    from lightattn.cli.list_cmd import first_paragraph, summary

    for name in lightattn.list_attention():
        doc = lightattn.layers.get_attention_class(name).__doc__
        text = summary(doc)
        assert text.endswith((".", "!", "?")), (name, text)
        assert first_paragraph(doc).startswith(text) and "\n" not in text
    mhsa = summary(lightattn.layers.get_attention_class("mhsa").__doc__)
    assert mhsa == "Global softmax attention over all N = H*W tokens (Vaswani et al. 2017; ViT)."


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ("One line\n    continued here. Second sentence.\n\n    More.", "One line continued here."),
        ("Pan et al. Propose it (Fig. 2). Then.", "Pan et al. Propose it (Fig. 2)."),
        ("No sentence end\n    at all\n\n    Next paragraph.", "No sentence end at all"),
        ("Means, i.e. Averages (see A. B.). Next.", "Means, i.e. Averages (see A. B.)."),
        (None, ""),
    ],
)
def test_list_summary_rule(doc, expected):
    from lightattn.cli.list_cmd import summary

    assert summary(doc) == expected


def test_list_prints_whole_summaries():
    code, stdout, _ = run_main(["list"])
    assert code == 0
    text = " ".join(line.strip(" │") for line in stdout.splitlines())
    assert "(itself counted once)." in re.sub(r"\s*│\s*", " ", text)


@pytest.mark.parametrize("layout", ["tokens", "channels_last"])
def test_layout_option(layout):
    code, stdout, stderr = run_main(["bench", "--attn", "window", "--sizes", "5x6", *FAST,
                                     "--layout", layout, "--json"])  # fmt: skip
    assert code == 0, stderr
    data = json.loads(stdout)
    assert data["config"]["layout"] == layout
    assert all(r["layout"] == layout and r["status"] == "ok" for r in data["rows"])


def test_variant_option_adds_a_row_with_its_kwargs():
    code, stdout, stderr = run_main(["bench", "--attn", "window", "--sizes", "7", *FAST,
                                     "--no-reference", "--json", "--variant", "w3=window",
                                     "--kwargs", "w3:window_size=3"])  # fmt: skip
    assert code == 0, stderr
    rows = {r["mechanism"]: r for r in json.loads(stdout)["rows"]}
    assert set(rows) == {"mhsa", "window", "w3"}
    assert rows["w3"]["attention"] == "window" and rows["w3"]["settings"]["window_size"] == 3
    assert rows["window"]["settings"]["window_size"] == 7


def test_wide_table_shows_every_column():
    argv = ["bench", "--attn", "window", "--sizes", "7", *FAST]
    code, compact, _ = run_main(argv)
    assert code == 0 and "computed GMACs" not in compact and "min" in compact
    code, wide, _ = run_main([*argv, "--wide"])
    assert code == 0 and "computed" in wide and "ref peak" in wide
