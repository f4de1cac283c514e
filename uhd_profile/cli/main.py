"""Command line: thin. Parse, call the API, render. User mistakes -> one line on stderr, exit 2."""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.table import Table

from uhd_profile.errors import UhdProfileError
from uhd_profile.count.flops import CONVENTION_HELP, CONVENTIONS

COUNTERS = ("uhd", "fvcore", "thop")  # ours, then the peer libraries (uhd_profile.count.peers)

# Wide enough for the tables when piped (rich would otherwise assume 80 columns).
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)


def _fail(message: str, code: int = 2) -> None:
    err.print(f"error: {message}", markup=False, highlight=False)
    sys.exit(code)


def parse_resolution(text: str | None) -> tuple[int, int] | None:
    """``R`` (square) or ``WxH`` (width x height, like image sizes) -> (H, W) pixels."""
    if text is None:
        return None
    parts = text.lower().split("x")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        nums = []
    if len(nums) not in (1, 2) or any(n <= 0 for n in nums):
        raise UhdProfileError(f"resolution {text!r} is not valid; give a positive side R (square) or WxH, e.g. 980 or 1344x756")
    if len(nums) == 1:
        return (nums[0], nums[0])
    w, h = nums
    return (h, w)


def resolve_spec(encoder, resolution, variant, compressor, depth, post_ratio, quiet=False):
    """Turn CLI choices into a VariantSpec. ``post_ratio`` None means the design's ratio where the
    token grid allows it, else 1 (the ViT alone), said on stderr."""
    from uhd_profile.model.variants import VariantSpec

    if compressor is not None and variant is not None:
        raise UhdProfileError(f"--variant {variant} and --compressor {compressor} both given; use one (v4 = window-attn-reused-mlp at depth 6)")
    if variant == "baseline" and depth is not None:
        raise UhdProfileError("--depth does not apply to --variant baseline (no in-ViT compression)")
    if compressor is not None and depth is None:
        raise UhdProfileError(f"--compressor {compressor} needs --depth K (0-based encoder layer index after which it runs)")
    kw = dict(encoder=encoder, resolution=parse_resolution(resolution), post_ratio=1)
    if compressor is not None:
        spec = VariantSpec(compressor=compressor, depth=depth, **kw)
    else:
        spec = VariantSpec.alias(variant or "baseline", depth=depth, **kw)
    if post_ratio is not None:
        return spec.with_(post_ratio=int(post_ratio))
    design = 16 // spec.in_vit_ratio
    if spec.connector_fits(design):
        return spec.with_(post_ratio=design)
    if not quiet:
        h, w = spec.grid_after_vit
        err.print(
            f"note: a {design}x connector does not fit the {h}x{w} token grid after the ViT; counting the ViT alone "
            f"(--post-ratio 1). Pass --post-ratio, or a resolution whose grid divides, to change that.",
            markup=False, highlight=False,
        )
    return spec


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="uhd-profile")
def cli() -> None:
    """uhd-profile: what high-resolution visual encoding costs in multimodal LLMs."""


def variant_options(f):
    from uhd_profile.model.encoders import DEFAULT_ENCODER

    opts = [
        click.option("--encoder", default=DEFAULT_ENCODER, show_default=True, help="encoder preset (uhd-profile list encoders)"),
        click.option("--resolution", default=None, help="input view: R (square) or WxH pixels [default: the encoder's native size]"),
        click.option("--variant", default=None, help="baseline (post-ViT 16x) or v4 (window-attn-reused-mlp at depth 6 + 4x) [default: baseline]"),
        click.option("--compressor", default=None, help="in-ViT compressor (uhd-profile list compressors)"),
        click.option("--depth", default=None, type=int, help="0-based encoder layer index after which the compressor runs"),
        click.option("--post-ratio", default=None, help="post-ViT connector ratio 1|4|16 (1 = the ViT alone) [default: the design's, if the grid allows]"),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


@cli.command()
@variant_options
@click.option("--convention", default="macs", show_default=True, help="macs | flops | paper")
@click.option("--by-module", is_flag=True, help="also break the count down by module (per layer)")
@click.option("--counter", default="uhd", show_default=True, help="uhd (ours) | fvcore | thop (peer libraries, run on the same variant)")
@click.option("--weights", default=None, help="local checkpoint directory (counts then run a real forward on CPU)")
@click.option("--batch", default=1, type=int, show_default=True, help="images per forward")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def flops(encoder, resolution, variant, compressor, depth, post_ratio, convention, by_module, counter, weights, batch, as_json):
    """Count a variant's FLOPs by executing its module graph (shapes only: no arithmetic)."""
    from uhd_profile.count.flops import check_convention, count_flops
    from uhd_profile.model.variants import POST_RATIOS

    check_convention(convention)
    if weights is not None:
        from uhd_profile.model.trunks import check_weights_dir

        check_weights_dir(weights)
    if post_ratio is not None and post_ratio not in {str(r) for r in POST_RATIOS}:
        raise UhdProfileError(f"--post-ratio {post_ratio} is not valid; valid: 1, 4, 16")
    if counter not in COUNTERS:
        raise UhdProfileError(f"--counter {counter!r} is not valid; valid: {', '.join(COUNTERS)}")
    if batch < 1:
        raise UhdProfileError(f"--batch {batch} is not valid; it must be at least 1")
    spec = resolve_spec(encoder, resolution, variant, compressor, depth, post_ratio, quiet=as_json)
    if counter != "uhd":
        return _peer(counter, spec, batch, as_json)
    if weights is not None:
        from uhd_profile.count.flops import count_module
        from uhd_profile.model.variants import build_variant, example_input

        model = build_variant(spec, device="cpu", weights=weights)
        fc = count_module(model, example_input(spec, batch, "cpu"), shape_only=False)
        fc.variant_id, fc.encoder, fc.tokens_in, fc.tokens_llm = spec.id, spec.encoder, spec.tokens_in, spec.tokens_llm
    else:
        fc = count_flops(spec, batch=batch)
    total = fc.get(convention)
    record = {
        "encoder": spec.encoder,
        "variant_id": spec.id,
        "resolution": list(spec.size),
        "post_ratio": spec.ratio,
        "batch": batch,
        "tokens_in": spec.tokens_in,
        "tokens_llm": spec.tokens_llm,
        "convention": convention,
        "total": total,
        "gflops": total / 1e9,
        "counts": {c: fc.get(c) for c in CONVENTIONS},
        "by_module": fc.grouped(1, convention),
        "uncounted_ops": fc.uncounted_ops,
        "count_seconds": fc.seconds,
    }
    if as_json:
        click.echo(json.dumps(record))
        return
    unit = "GMACs" if convention == "macs" else "GFLOPs"
    t = Table(title=f"{spec.id}  ({convention}: {CONVENTION_HELP[convention]})", title_justify="left")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    t.add_row("tokens into the ViT", f"{spec.tokens_in:,}")
    t.add_row("tokens to the LLM", f"{spec.tokens_llm:,}")
    for c in CONVENTIONS:
        u = "GMACs" if c == "macs" else "GFLOPs"
        t.add_row(f"{'[b]' if c == convention else ''}total, {c} convention ({u})", f"{fc.get(c) / 1e9:,.3f}")
    out.print(t)
    if by_module:
        bm = Table(title=f"by module ({convention}, {unit})", title_justify="left")
        bm.add_column("module")
        bm.add_column(unit, justify="right")
        bm.add_column("share", justify="right")
        for name, v in fc.grouped(1, convention).items():
            bm.add_row(name, f"{v / 1e9:,.3f}", f"{(v / total if total else 0):.1%}")
        out.print(bm)
    if fc.uncounted_ops:
        err.print(f"warning: ops with no formula, NOT in the totals: {fc.uncounted_ops}", markup=False)


def _peer(counter: str, spec, batch: int, as_json: bool) -> None:
    from uhd_profile.count.peers import run_peer

    pc = run_peer(counter, spec, batch=batch)
    record = {"encoder": spec.encoder, "variant_id": spec.id, "counter": pc.counter, "unit": pc.unit,
              "total": pc.total, "giga": pc.total / 1e9, "by_module": pc.by_module,
              "uncounted_ops": pc.unsupported_ops, "notes": pc.notes, "count_seconds": pc.seconds}
    if as_json:
        click.echo(json.dumps(record))
        return
    t = Table(title=f"{spec.id}  (peer counter: {pc.counter})", title_justify="left")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    t.add_row(f"total as {pc.counter} reports it ({pc.unit})", f"{pc.total / 1e9:,.3f} G")
    out.print(t)
    for n in pc.notes:
        err.print(f"note: {n}", markup=False)
    if pc.unsupported_ops:
        err.print(f"{pc.counter} skipped: {pc.unsupported_ops}", markup=False)


def _float_opt(name: str, value: float | None, minimum: float = 0.0, strict: bool = False) -> None:
    import math

    if value is None:
        return
    if not math.isfinite(value) or value < minimum or (strict and value <= minimum):
        rule = f"> {minimum}" if strict else f">= {minimum}"
        raise UhdProfileError(f"{name} {value} is not valid; it must be a finite number {rule}")


@cli.command()
@variant_options
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N (only auto may fall back to the CPU)")
@click.option("--dtype", default="fp32", show_default=True, help="fp32 | bf16 | fp16")
@click.option("--batch", default=1, type=int, show_default=True, help="images per forward")
@click.option("--threads", default=None, type=int, help="CPU threads for torch [default: torch's]")
@click.option("--attn", default="sdpa", show_default=True, help="attention backend: sdpa | eager")
@click.option("--compile", "use_compile", is_flag=True, help="torch.compile the variant")
@click.option("--cuda-graphs", is_flag=True, help="replay the forward from a CUDA graph")
@click.option("--l2-flush", is_flag=True, help="flush the GPU L2 before each iteration (cold cache)")
@click.option("--min-time", default=None, type=float, help="minimum measuring time, s [default 1.0]")
@click.option("--max-time", default=None, type=float, help="time limit of the measurement, s [default 30]")
@click.option("--target-iqr", default=None, type=float, help="stop when IQR/median is under this [default 0.05]")
@click.option("--min-samples", default=None, type=int, help="minimum samples [default 10]")
@click.option("--no-telemetry", is_flag=True, help="do not sample NVML while timing")
@click.option("--trace", "trace_dir", default=None, help="write a torch.profiler trace to this directory")
@click.option("--weights", default=None, help="local checkpoint directory")
@click.option("--json", "as_json", is_flag=True, help="print the record as one JSON object")
def bench(encoder, resolution, variant, compressor, depth, post_ratio, device, dtype, batch, threads, attn,
          use_compile, cuda_graphs, l2_flush, min_time, max_time, target_iqr, min_samples, no_telemetry,
          trace_dir, weights, as_json):
    """Measure one variant on one device: latency, memory, energy, roofline."""
    from dataclasses import replace

    from uhd_profile.measure.bench import BenchSettings, bench as run_bench
    from uhd_profile.measure.devices import resolve_device
    from uhd_profile.measure.timing import TimingSettings

    for name, value in (("--min-time", min_time), ("--max-time", max_time)):
        _float_opt(name, value)
    _float_opt("--target-iqr", target_iqr, strict=True)
    if weights is not None:
        from uhd_profile.model.trunks import check_weights_dir

        check_weights_dir(weights)
    resolve_device(device)  # a missing GPU is a usage error before anything is built
    timing = TimingSettings()
    overrides = {k: v for k, v in (("min_time_s", min_time), ("max_time_s", max_time), ("target_iqr", target_iqr),
                                   ("min_samples", min_samples)) if v is not None}
    if l2_flush:
        overrides["l2_flush"] = True
    if overrides:
        if "min_time_s" in overrides and "max_time_s" not in overrides and overrides["min_time_s"] > timing.max_time_s:
            overrides["max_time_s"] = overrides["min_time_s"]
        timing = replace(timing, **overrides)
    settings = BenchSettings(device=device, dtype=dtype, batch=batch, threads=threads, attn=attn, compile=use_compile,
                             cuda_graphs=cuda_graphs, timing=timing, telemetry=not no_telemetry, trace_dir=trace_dir)
    spec = resolve_spec(encoder, resolution, variant, compressor, depth, post_ratio, quiet=as_json)
    rec = run_bench(spec, settings, weights=weights)
    if as_json:
        click.echo(json.dumps(rec.as_dict()))
        return
    _render_bench(rec)


def _fmt_bytes(b):
    return "n/a" if b is None else f"{b / 2**20:,.1f} MiB"


def _render_bench(rec) -> None:
    lat = rec.latency_s
    t = Table(title=f"{rec.variant_id} on {rec.device} ({rec.dtype}, batch {rec.batch}, {rec.threads} threads, {rec.attn})",
              title_justify="left")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    flag = {"ok": "[green]ok[/]", "noisy": "[yellow]noisy (IQR/median >= 10%)[/]",
            "unreliable": "[red]unreliable (IQR/median >= 25%)[/]"}[rec.noise_flag]
    t.add_row("latency median", f"{lat['median'] * 1e3:,.2f} ms")
    t.add_row("latency p10 / p90", f"{lat['p10'] * 1e3:,.2f} / {lat['p90'] * 1e3:,.2f} ms")
    t.add_row("IQR / median", f"{lat['iqr_over_median']:.2%}  {flag}")
    stop = lat["stop_reason"] + (f" ({lat['unmet']})" if lat.get("unmet") else "")
    t.add_row("samples / stop rule", f"{lat['n']} / {stop}")
    if rec.memory:
        m = rec.memory
        t.add_row(f"peak memory ({m['method']})", _fmt_bytes(m.get("peak_bytes")))
        t.add_row("activation memory (peak - before)", _fmt_bytes(m.get("activation_bytes")))
        t.add_row("weights", _fmt_bytes(m.get("weights_bytes")))
    t.add_row("counted per forward", f"{rec.flops['macs'] / 1e9:,.2f} GMACs | {rec.flops['flops'] / 1e9:,.2f} GFLOPs (flops convention)")
    if rec.achieved_flops_per_s:
        t.add_row("achieved", f"{rec.achieved_flops_per_s / 1e9:,.1f} GFLOP/s")
    if rec.peak:
        mfu = f"{rec.mfu:.1%}" if rec.mfu is not None else "n/a"
        t.add_row("MFU", f"{mfu} of {rec.peak['flops_per_s'] / 1e9:,.0f} GFLOP/s ({rec.peak['kind']}: {rec.peak['source']})")
    tel = rec.telemetry
    if tel.get("available"):
        e = tel.get("energy_j")
        t.add_row("energy per image", "n/a" if e is None else f"{e / max(1, rec.batch * lat['n']):.3f} J ({tel.get('energy_method')})")
        t.add_row("mean power / max temp", f"{tel.get('mean_power_w')} W / {tel.get('max_temp_c')} C")
    else:
        t.add_row("telemetry", f"none: {tel.get('reason')}")
    out.print(t)
    if rec.module_time_s:
        mt = Table(title="time per forward by module (profiler)", title_justify="left")
        mt.add_column("module")
        mt.add_column("ms", justify="right")
        for k, v in sorted(rec.module_time_s.items(), key=lambda kv: -kv[1]):
            mt.add_row(k, f"{v * 1e3:,.2f}")
        out.print(mt)
        out.print(f"trace: {rec.trace_path}")
    for n in rec.notes:
        err.print(f"note: {n}", markup=False)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def reproduce(as_json):
    """Every FLOPs figure the paper prints next to what uhd-profile counts (exit 1 if any is off by >0.1%)."""
    from uhd_profile.count.paper import REL_TOL, reproduce as run

    r = run()
    if as_json:
        click.echo(json.dumps(r.as_dict()))
    else:
        t = Table(title="LLaVA-UHD v4 visual-encoding FLOPs per 980 px slice (so400m/14, ViT alone)", title_justify="left")
        for col in ("figure", "paper (G)", "counted, paper conv. (G)", "rel. err", "", "as executed (GMACs)"):
            t.add_column(col, justify="left" if col == "figure" else "right")
        for row in r.rows:
            mark = "[green]pass[/]" if row.ok else "[red]FAIL[/]"
            t.add_row(row.figure, f"{row.paper_gflops:,.1f}", f"{row.counted_gflops:,.2f}", f"{row.rel_err:+.4%}", mark, f"{row.executed_gflops:,.2f}")
        out.print(t)
        red = r.reduction
        out.print(
            f"v4 vs post-ViT baseline: paper {red['paper']:.2%} | counted (paper convention) {red['counted']:.2%} | "
            f"as executed (macs) {red['executed']:.2%}"
        )
        out.print(f"counted from executed modules in {r.count_seconds:.1f} s; tolerance {REL_TOL:.1%}")
    if not r.ok:
        sys.exit(1)


@cli.command()
@click.argument("recipe", required=False, default="paper")
@click.option("--out", "out_dir", default=None, help="run directory [default: runs/<recipe>-<UTC time>]")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N (selects the recipe's [when.*] settings)")
@click.option("--resume", is_flag=True, help="continue the run in --out: skip recorded points")
@click.option("--shard", default=None, help="run the deterministic I/N share of the points (0 <= I < N)")
@click.option("--executor", default="local", show_default=True, help="local | ray")
@click.option("--ray-address", default=None, help="an existing Ray cluster (auto, host:port, ray://host:port) [default: a local one]")
@click.option("--only", default=None, help="run only points whose variant id or point id matches this glob")
@click.option("--dry-run", is_flag=True, help="list the points and their count, run nothing")
@click.option("--in-process", is_flag=True, help="measure in this process, not a fresh one per measured point (debugging)")
@click.option("--no-report", is_flag=True, help="do not write RUN_DIR/report at the end (`uhd-profile report` does it later)")
def sweep(recipe, out_dir, device, resume, shard, executor, ray_address, only, dry_run, in_process, no_report):
    """Run a recipe (a shipped name such as paper, smoke, depth-sweep, encoders, or a TOML path).

    With no RECIPE it runs paper.toml. Exit code 1 if any point failed (oom or error).
    """
    import os
    from datetime import datetime, timezone

    from uhd_profile.run.executors import check_executor
    from uhd_profile.run.recipe import load_recipe
    from uhd_profile.run.sweep import parse_shard, run_sweep, select

    check_executor(executor)
    if ray_address is not None and executor != "ray":
        raise UhdProfileError("--ray-address needs --executor ray")
    shard_t = parse_shard(shard)
    rec = load_recipe(recipe, device=device)
    if dry_run:
        pts = select([p.as_dict() for p in rec.points], shard_t, only)
        t = Table(title=f"{rec.name} ({rec.path}): {len(pts)} points" + (f", shard {shard}" if shard else ""), title_justify="left")
        for col in ("#", "point_id", "variant_id", "measure", "dtype", "batch", "device"):
            t.add_column(col)
        for i, p in enumerate(pts):
            t.add_row(str(i), p["point_id"], p["variant_id"], "+".join(p["measure"]), p["dtype"], str(p["batch"]), p["device"])
        out.print(t)
        out.print(f"{len(pts)} points")
        return
    if resume and out_dir is None:
        raise UhdProfileError("--resume needs --out DIR (the run directory to continue)")
    if out_dir is None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        out_dir = os.path.join("runs", f"{rec.name}-{stamp}")
    from uhd_profile.run.sweep import run_point, run_point_isolated

    summary = run_sweep(rec, out_dir, resume=resume, shard=shard_t, executor=executor, ray_address=ray_address, only=only,
                        runner=run_point if in_process else run_point_isolated)
    _render_summary(summary)
    if not no_report:
        _sweep_report(out_dir)
    if summary.failed:
        sys.exit(1)


def _sweep_report(run_dir: str) -> None:
    """The report at the end of a sweep. The results are already safe on disk, so a report that
    cannot be written is one line on stderr, not a failed sweep; `uhd-profile report` retries it."""
    from uhd_profile.analyse.report import write_report

    try:
        written = write_report(run_dir, recount=False)
    except (UhdProfileError, OSError, ValueError) as exc:
        err.print(f"report not written: {exc}; retry with `uhd-profile report {run_dir}`", markup=False)
        return
    for key in ("md", "html"):
        if key in written:
            out.print(f"report: {written[key]}", markup=False, highlight=False)


def _render_summary(summary) -> None:
    t = Table(title=f"sweep results ({summary.run_dir})", title_justify="left")
    for col in ("variant", "dtype", "device", "status", "GMACs", "paper G", "latency median", "IQR/median", "peak mem"):
        t.add_column(col, justify="left" if col in ("variant", "status", "dtype", "device") else "right")
    for r in summary.records:
        m, p = r.get("metrics") or {}, r["point"]
        status = {"ok": "[green]ok[/]", "oom": "[red]oom[/]", "error": "[red]error[/]"}.get(r["status"], r["status"])
        lat = m.get("latency_median_s")
        iqr = m.get("latency_iqr_over_median")
        flag = "" if m.get("noise_flag") in (None, "ok") else f" {m['noise_flag']}"
        t.add_row(p["variant_id"], p["dtype"], p["device"], status,
                  f"{m['macs'] / 1e9:,.2f}" if m.get("macs") is not None else "",
                  f"{m['paper'] / 1e9:,.2f}" if m.get("paper") is not None else "",
                  f"{lat * 1e3:,.1f} ms" if lat is not None else "",
                  (f"{iqr:.1%}" + flag) if iqr is not None else "",
                  _fmt_bytes(m.get("peak_mem_bytes")) if m.get("peak_mem_bytes") is not None else "")
    out.print(t)
    counts = ", ".join(f"{v} {k}" for k, v in sorted(summary.counts.items())) or "nothing new"
    out.print(f"{summary.total} points: {summary.already_done} already recorded, this run: {counts}; "
              f"{summary.wall_s:.1f} s. Results: {summary.run_dir} (uhd_profile.load(dir) -> DataFrame)")
    for r in summary.records:
        if r["status"] != "ok":
            err.print(f"{r['status']}: {r['point']['variant_id']}: {r.get('error')}", markup=False)


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True)
@click.option("--out", "out_dir", required=True, help="the merged run directory (must not hold results)")
def merge(run_dirs, out_dir):
    """Combine shard run directories into one (refuses duplicate points and mismatched recipes)."""
    from uhd_profile.run.store import merge as merge_dirs

    n = merge_dirs(list(run_dirs), out_dir)
    out.print(f"merged {len(run_dirs)} run directories into {out_dir}: {n} records")


@cli.command(name="list")
@click.argument("what", type=str)
def list_(what):
    """List presets: `encoders`, `compressors` or `recipes`."""
    if what == "encoders":
        from uhd_profile.model.encoders import ENCODERS

        t = Table(title="encoder presets", title_justify="left")
        for col in ("name", "layers", "hidden", "mlp", "heads", "patch", "native px", "description"):
            t.add_column(col)
        for e in ENCODERS.values():
            t.add_row(e.name, str(e.layers), str(e.hidden), str(e.mlp), str(e.heads), str(e.patch), str(e.image_size), e.description)
        out.print(t)
    elif what == "compressors":
        from uhd_profile.model.compressors import COMPRESSORS

        t = Table(title="in-ViT compressors (each followed by a 4x connector: 16x in total)", title_justify="left")
        for col in ("name", "paper", "reuses layer k", "structure"):
            t.add_column(col)
        for c in COMPRESSORS.values():
            t.add_row(c.name, c.paper_label, "yes" if c.reuse else "no", c.description)
        out.print(t)
    elif what == "recipes":
        from uhd_profile.run.recipe import load_recipe, shipped_recipes

        t = Table(title="shipped recipes (uhd-profile sweep NAME; on this machine's device)", title_justify="left")
        for col in ("name", "points", "measured", "description"):
            t.add_column(col)
        for name in shipped_recipes():
            r = load_recipe(name)
            t.add_row(name, str(len(r.points)), str(sum(p.measured for p in r.points)), r.description)
        out.print(t)
    else:
        raise UhdProfileError(f"cannot list {what!r}; valid: encoders, compressors, recipes")


from uhd_profile.cli.gate import baseline, check  # noqa: E402 - the regression gate (cli_gate.py)
cli.add_command(baseline); cli.add_command(check)  # noqa: E702


from uhd_profile.cli.report import report  # noqa: E402
cli.add_command(report)


from uhd_profile.cli.images import dataset, image  # noqa: E402 - whole images: slicing vs global (cli_images.py)
cli.add_command(image); cli.add_command(dataset)  # noqa: E702


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors, exit 2 for usage mistakes."""
    try:
        rv = cli.main(args=argv, prog_name="uhd-profile", standalone_mode=False)
    except UhdProfileError as exc:
        _fail(str(exc))
    except click.exceptions.NoSuchOption as exc:
        _fail(exc.format_message())
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except click.exceptions.Abort:
        _fail("aborted", 130)
    else:
        if isinstance(rv, int) and rv:
            sys.exit(rv)


if __name__ == "__main__":
    main()
