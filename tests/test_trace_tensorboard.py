"""A `uhd-profile bench --trace` trace opens in TensorBoard's profiler plugin (torch-tb-profiler).

The trace is loaded with the plugin's own loader (`RunLoader`, what the plugin runs on each run
directory under ``--logdir``), not with our JSON reading. Where our ranges show: the plugin's
Trace view serves the trace file itself (``RunProfile.trace_file_path``, see the plugin's
``trace_route``), so the ``uhd::`` ranges are visible there; its Operator view aggregates aten
operators only (its event parser keeps no ``user_annotation`` ranges apart from ProfilerStep#).
"""

from __future__ import annotations

import gzip
import json
import os

import pytest


@pytest.fixture(scope="module")
def tb():
    try:
        import torch_tb_profiler  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):  # the test extra installs it: there a skip would hide a broken trace
            pytest.fail("CI must run the TensorBoard trace test: pip install -e '.[test]' installs torch-tb-profiler")
        pytest.skip("torch-tb-profiler not installed (pip install -e '.[test]')")
    from torch_tb_profiler import consts, io
    from torch_tb_profiler.profiler.loader import RunLoader

    return consts, io, RunLoader


def test_bench_trace_loads_in_the_tensorboard_plugin(tb, cli, tmp_path):
    consts, io, RunLoader = tb
    logdir = tmp_path / "trace"
    code, out, err = cli(
        "bench",
        "--encoder",
        "tiny",
        "--resolution",
        "64",
        "--device",
        "cpu",
        "--variant",
        "v4",
        "--depth",
        "1",
        "--min-time",
        "0.05",
        "--max-time",
        "0.5",
        "--trace",
        str(logdir),
        "--json",
    )
    assert code == 0, err
    rec = json.loads(out)
    name = os.path.basename(rec["trace_path"])
    assert os.path.dirname(rec["trace_path"]) == str(logdir)
    assert consts.WORKER_PATTERN.match(name)  # the plugin finds the file in the run directory

    (tmp_path / "tb-cache").mkdir()
    with io.Cache(str(tmp_path / "tb-cache")) as cache:
        run = RunLoader("uhd", str(logdir), cache).load()
        profiles = list(run.get_profiles())
        # the loader logs and drops a trace it cannot parse: no profile means it failed
        assert len(profiles) == 1, "torch-tb-profiler could not parse the trace (see its log)"
        prof = profiles[0]
        assert prof.worker == "uhd-profile"
        views = [v.display_name for v in prof.views]
        assert {"Overview", "Operator", "Trace"} <= set(views), views
        ops = {row["name"] for row in prof.operation_table_by_name["data"]}
        assert {"aten::linear", "aten::scaled_dot_product_attention"} <= ops
        raw = cache.read(prof.trace_file_path)  # what the Trace view sends to the browser
    if prof.trace_file_path.endswith(".gz"):
        raw = gzip.decompress(raw)
    events = json.loads(raw)["traceEvents"]
    ranges = {e["name"] for e in events if e.get("ph") == "X" and str(e.get("name", "")).startswith("uhd::")}
    assert {"uhd::embed", "uhd::attention", "uhd::mlp", "uhd::compressor", "uhd::connector"} <= ranges
    steps = [e for e in events if str(e.get("name", "")).startswith("ProfilerStep#")]
    assert len(steps) == 3  # profile_trace's three active iterations, one per forward
    inside = [
        e for e in events if e.get("name") == "uhd::attention" and any(s["ts"] <= e["ts"] <= s["ts"] + s["dur"] for s in steps)
    ]
    assert inside, "the uhd:: ranges do not fall inside the profiled steps"
