"""``uhd-profile bench``: measure one variant on one device."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

import click
from rich.table import Table

from uhd_profile.cli.console import note, out
from uhd_profile.cli.options import VariantFlags, attn_option, check_attn, check_dtype, dtype_option, variant_options
from uhd_profile.errors import UhdProfileError
from uhd_profile.files import check_output_dir
from uhd_profile.measure.bench import BenchResult, BenchSettings
from uhd_profile.measure.bench import bench as run_bench
from uhd_profile.measure.devices import resolve_device
from uhd_profile.measure.dtypes import DtypeChoice, resolve_dtype
from uhd_profile.measure.limits import check_threads
from uhd_profile.measure.timing import TimingSettings
from uhd_profile.model.trunks import check_weights_dir
from uhd_profile.units import format_bytes


def _float_opt(name: str, value: float | None, minimum: float = 0.0, strict: bool = False) -> None:
    if value is None:
        return
    if not math.isfinite(value) or value < minimum or (strict and value <= minimum):
        rule = f"> {minimum}" if strict else f">= {minimum}"
        raise UhdProfileError(f"{name} {value} is not valid; it must be a finite number {rule}")


_TIMING_FLAGS = {
    "min_time_s": "--min-time",
    "max_time_s": "--max-time",
    "target_iqr": "--target-iqr",
    "min_samples": "--min-samples",
}


def _timing(
    min_time: float | None, max_time: float | None, target_iqr: float | None, min_samples: int | None, l2_flush: bool
) -> TimingSettings:
    """``TimingSettings`` from the flags given; the default of a flag not given bends to one given
    (``--max-time 0.5`` alone lowers the 1 s minimum time to 0.5 s). Errors name the flags."""
    timing = TimingSettings()
    if min_time is not None and max_time is not None and min_time > max_time:
        raise UhdProfileError(f"--min-time {min_time} is more than --max-time {max_time}; the minimum time must be <= the limit")
    overrides: dict[str, Any] = {
        k: v
        for k, v in (("min_time_s", min_time), ("max_time_s", max_time), ("target_iqr", target_iqr), ("min_samples", min_samples))
        if v is not None
    }
    if l2_flush:
        overrides["l2_flush"] = True
    if "min_time_s" in overrides and "max_time_s" not in overrides and overrides["min_time_s"] > timing.max_time_s:
        overrides["max_time_s"] = overrides["min_time_s"]
    if "max_time_s" in overrides and "min_time_s" not in overrides and overrides["max_time_s"] < timing.min_time_s:
        overrides["min_time_s"] = overrides["max_time_s"]
    try:
        return replace(timing, **overrides)
    except UhdProfileError as exc:
        text = str(exc)
        for field_name, flag in _TIMING_FLAGS.items():
            text = text.replace(f"TimingSettings.{field_name}", flag).replace(field_name, flag)
        raise UhdProfileError(text) from None


@click.command()
@variant_options
@click.option(
    "--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N (only auto may fall back to the CPU)"
)
@dtype_option(what="the dtype the variant runs in", auto=True)
@click.option("--batch", default=1, type=int, show_default=True, help="images per forward")
@click.option("--threads", default=None, type=int, help="CPU threads for torch [default: torch's]")
@attn_option
@click.option("--compile", "use_compile", is_flag=True, help="torch.compile the variant")
@click.option("--cuda-graphs", is_flag=True, help="replay the forward from a CUDA graph")
@click.option("--l2-flush", is_flag=True, help="flush the GPU L2 before each iteration (cold cache)")
@click.option("--min-time", default=None, type=float, help="minimum measuring time, s [default 1.0, or --max-time if less]")
@click.option("--max-time", default=None, type=float, help="time limit of the measurement, s [default 30, or --min-time if more]")
@click.option("--target-iqr", default=None, type=float, help="stop when IQR/median is under this [default 0.05]")
@click.option("--min-samples", default=None, type=int, help="minimum samples [default 10]")
@click.option("--no-telemetry", is_flag=True, help="do not sample NVML while timing")
@click.option("--trace", "trace_dir", default=None, help="write a torch.profiler trace to this directory")
@click.option("--weights", default=None, help="local checkpoint directory")
@click.option("--json", "as_json", is_flag=True, help="print the result as one JSON object")
def bench(
    flags: VariantFlags,
    device: str,
    dtype: str,
    batch: int,
    threads: int | None,
    attn: str,
    use_compile: bool,
    cuda_graphs: bool,
    l2_flush: bool,
    min_time: float | None,
    max_time: float | None,
    target_iqr: float | None,
    min_samples: int | None,
    no_telemetry: bool,
    trace_dir: str | None,
    weights: str | None,
    as_json: bool,
) -> None:
    """Measure one variant on one device: latency, memory, energy, roofline."""
    problems: list[str] = []  # every bad option, reported together in one line

    def check(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except UhdProfileError as exc:
            problems.append(str(exc))
            return None

    for name, value in (("--min-time", min_time), ("--max-time", max_time)):
        check(partial(_float_opt, name, value))
    check(partial(_float_opt, "--target-iqr", target_iqr, strict=True))
    if min_samples is not None and min_samples < 1:
        problems.append(f"--min-samples {min_samples} is not valid; it must be an integer >= 1")
    timing = None if problems else check(partial(_timing, min_time, max_time, target_iqr, min_samples, l2_flush))
    if batch < 1:
        problems.append(f"--batch {batch} is not valid; it must be an integer >= 1")
    if threads is not None and threads < 1:
        problems.append(f"--threads {threads} is not valid; it must be an integer >= 1")
    dtype = check(partial(check_dtype, dtype, auto=True))
    check(partial(check_attn, attn))
    if weights is not None:
        check(partial(check_weights_dir, weights))
    dev = check(partial(resolve_device, device))  # a missing GPU is a usage error before anything is built
    if dev is not None and dev.type == "cpu" and threads is not None and threads >= 1:
        check(partial(check_threads, threads))
    if trace_dir is not None:
        check(partial(check_output_dir, trace_dir, "--trace"))
    spec = check(flags.spec)
    if problems:
        raise UhdProfileError(problems[0] if len(problems) == 1 else f"{len(problems)} problems: " + "; ".join(problems))
    assert timing is not None and dev is not None  # built whenever no option was refused
    # `auto` the way a sweep resolves a recipe's dtype "auto": on this device and thread count
    dtype, choice = resolve_dtype(dtype, str(dev), threads)
    if choice is not None:
        note(f"dtype auto -> {choice.dtype}: {choice.reason}")
    settings = BenchSettings(
        device=device,
        dtype=dtype,
        batch=batch,
        threads=threads,
        attn=attn,
        compile=use_compile,
        cuda_graphs=cuda_graphs,
        timing=timing,
        telemetry=not no_telemetry,
        trace_dir=trace_dir,
    )
    result = run_bench(spec, settings, weights=weights)
    record_dtype(result, choice)
    if as_json:
        rec = result.to_json()
        if choice is not None:
            rec["dtype_auto"] = choice.as_dict()
        click.echo(json.dumps(rec))
        return
    render_bench(result)


def record_dtype(result: BenchResult, choice: DtypeChoice | None) -> None:
    """``measured_dtype`` and ``dtype_reason`` in the metrics, as a sweep's records hold them
    (``Point.measured_fields``): what ``auto`` compared, or that the dtype was asked for."""
    dtype = result.settings.dtype
    reason = choice.reason if choice is not None else f"--dtype {dtype} asked for"
    result.metrics.update(measured_dtype=dtype, dtype_reason=reason)


def render_bench(r: BenchResult) -> None:
    m, s = r.metrics, r.settings
    t = Table(
        title=f"{r.spec.id} on {r.device} ({s.dtype}, batch {s.batch}, {r.threads} threads, {s.attn})", title_justify="left"
    )
    t.add_column("quantity")
    t.add_column("value", justify="right")
    flag = {
        "ok": "[green]ok[/]",
        "noisy": "[yellow]noisy (IQR/median >= 10%)[/]",
        "unreliable": "[red]unreliable (IQR/median >= 25%)[/]",
    }[m["noise_flag"]]
    if str(m.get("dtype_reason", "")).startswith("auto"):
        t.add_row("dtype (auto)", f"{s.dtype}: {m['dtype_reason']}")
    t.add_row("latency median", f"{m['latency_median_s'] * 1e3:,.2f} ms")
    t.add_row("latency p10 / p90", f"{m['latency_p10_s'] * 1e3:,.2f} / {m['latency_p90_s'] * 1e3:,.2f} ms")
    t.add_row("IQR / median", f"{m['latency_iqr_over_median']:.2%}  {flag}")
    stop = m["stop_reason"] + (f" ({m['latency_unmet']})" if m.get("latency_unmet") else "")
    t.add_row("samples / stop rule", f"{m['latency_n']} / {stop}")
    if r.memory is not None:
        t.add_row(f"peak memory ({m['memory_method']})", format_bytes(m.get("peak_mem_bytes")))
        t.add_row("activation memory (peak - before)", format_bytes(m.get("activation_mem_bytes")))
        t.add_row("weights", format_bytes(m.get("weights_bytes")))
    t.add_row("counted per forward", f"{m['macs'] / 1e9:,.2f} GMACs | {m['flops'] / 1e9:,.2f} GFLOPs (flops convention)")
    if m.get("achieved_flops_per_s"):
        t.add_row("achieved", f"{m['achieved_flops_per_s'] / 1e9:,.1f} GFLOP/s")
    if r.peak is not None:
        mfu = f"{m['mfu']:.1%}" if m.get("mfu") is not None else "n/a"
        t.add_row("MFU", f"{mfu} of {r.peak.flops_per_s / 1e9:,.0f} GFLOP/s ({r.peak.kind}: {r.peak.source})")
    tel = r.telemetry
    if tel.available:
        e = m.get("energy_per_image_j")
        t.add_row("energy per image", "n/a" if e is None else f"{e:.3f} J ({tel.energy_method})")
        t.add_row("mean power / max temp", f"{tel.mean_power_w} W / {tel.max_temp_c} C")
    else:
        t.add_row("telemetry", f"none: {tel.telemetry_reason}")
    out.print(t)
    if r.module_time_s:
        mt = Table(title="time per forward by module (profiler)", title_justify="left")
        mt.add_column("module")
        mt.add_column("ms", justify="right")
        for k, v in sorted(r.module_time_s.items(), key=lambda kv: -kv[1]):
            mt.add_row(k, f"{v * 1e3:,.2f}")
        out.print(mt)
        out.print(f"trace: {r.trace_path}")
    for n in r.notes:
        note(n)
