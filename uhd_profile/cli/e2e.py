"""``uhd-profile e2e``: what one image costs the whole multimodal model, stage by stage.

Thin: parse the flags into a ``PipelineSpec``, count it (``uhd_profile.count.pipeline``), render.
User mistakes raise ``UhdProfileError`` (one line, exit 2, printed by ``cli.main``).
"""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from uhd_profile.analyse.cost import MemorySettings
from uhd_profile.cli.console import note, out, say, warn
from uhd_profile.cli.options import (
    VariantFlags,
    check_dtype,
    check_llm,
    convention_option,
    dtype_option,
    llm_option,
    memory_options,
    memory_settings,
    variant_options,
)
from uhd_profile.cli.render import memory_json, print_memory
from uhd_profile.count.conventions import CONVENTIONS, get_convention
from uhd_profile.count.llm import count_llm
from uhd_profile.count.memory_model import predict_pipeline_memory
from uhd_profile.count.pipeline import PipelineCount, count_pipeline, position_options
from uhd_profile.errors import UhdProfileError
from uhd_profile.measure.pipeline import count_metrics
from uhd_profile.model.llms import DEFAULT_LLM, get_llm
from uhd_profile.model.pipeline import (
    DEFAULT_DECODE_TOKENS,
    DEFAULT_PROMPT_TOKENS,
    TTFT_STAGES,
    PipelineSpec,
    design_variant,
    drop_text,
    parse_drop,
)
from uhd_profile.model.slicing import MAX_SLICE_NUMS, SCALE_RESOLUTION
from uhd_profile.model.trunks import check_weights_dir
from uhd_profile.units import format_bytes, parse_resolution, parse_size

IMAGE_ENCODINGS = ("sliced", "global")
DEFAULT_VIEW = 448
"""One view of 448 px when neither --resolution nor --image is given: a slice, what LLaVA-UHD and
MiniCPM-V encode per view (the tower's native 980 px cannot be merged 16x: see merge_misfit)."""


def pipeline_from_flags(
    flags: VariantFlags,
    image: str | None = None,
    encoding: str | None = None,
    max_slices: int | None = None,
    scale_resolution: int | None = None,
    llm: str = DEFAULT_LLM,
    prompt_tokens: int = DEFAULT_PROMPT_TOKENS,
    decode_tokens: int = DEFAULT_DECODE_TOKENS,
    fastv: str | None = None,
    pyramid_drop: str | None = None,
) -> PipelineSpec:
    """The pipeline the flags describe. Without ``--post-ratio`` the tower's design connector
    (``VariantSpec.design_ratio``) is used, and a token grid it cannot divide is refused in one
    line (never rounded)."""
    kw: dict[str, Any] = {}
    if image is not None:
        if flags.resolution is not None:
            raise UhdProfileError("--image and --resolution both given; --image WxH is a whole image, --resolution one view")
        enc = encoding or "sliced"
        if enc not in IMAGE_ENCODINGS:
            raise UhdProfileError(f"--encoding {enc!r} is not valid; valid: {', '.join(IMAGE_ENCODINGS)}")
        kw.update(resolution=parse_size(image, "--image"), encoding=enc)
        if max_slices is not None:
            kw["max_slices"] = max_slices
        if scale_resolution is not None:
            kw["scale_resolution"] = scale_resolution
    else:
        for flag, value in (("--encoding", encoding), ("--max-slices", max_slices), ("--scale-resolution", scale_resolution)):
            if value is not None:
                raise UhdProfileError(f"{flag} applies to a whole image; add --image WxH (or drop {flag})")
        kw["resolution"] = parse_resolution(DEFAULT_VIEW if flags.resolution is None else flags.resolution, "--resolution")
    spec = flags.base_spec(**kw)
    spec = design_variant(spec, spec.design_ratio if flags.ratio is None else flags.ratio)
    if fastv is not None and pyramid_drop is not None:
        raise UhdProfileError("--fastv and --pyramid-drop both given; use one in-LLM drop")
    drop = None
    for flag, kind, text in (("--fastv", "fastv", fastv), ("--pyramid-drop", "pyramid-drop", pyramid_drop)):
        if text is not None:
            try:
                drop = parse_drop(f"{kind}:{text}")
            except UhdProfileError as exc:
                raise UhdProfileError(f"{flag} {text!r}: {exc}") from None
    for flag, n in (("--prompt-tokens", prompt_tokens), ("--decode-tokens", decode_tokens)):
        if n < 0:
            raise UhdProfileError(f"{flag} {n} is not valid; it must be an integer >= 0")
    return PipelineSpec(spec, llm=llm, prompt_tokens=prompt_tokens, decode_tokens=decode_tokens, drop=drop)


def _memory(pipeline: Any, pc: PipelineCount, mem: MemorySettings) -> list:
    """[(encoding, variant, MemoryPrediction)]: the vision stage of the pipeline's variant and the
    LLM over the visual tokens the count found entering it, plus the prompt."""
    v = pipeline.variant
    pred = predict_pipeline_memory(
        v,
        pipeline.llm,
        pipeline.prompt_tokens,
        pipeline.decode_tokens,
        mem.dtype,
        mem.attn,
        mem.device_kind,
        pc.llm.visual_tokens,
    )
    return [(v.encoding, v.compressor or "baseline", pred)]


def _with_weights(pc: PipelineCount, weights: str) -> dict[str, Any]:
    """The LLM stage of ``pc`` run for real on the CPU with the checkpoint's weights (random visual
    embeddings: the vision side has no checkpoint here), so a drop ranks tokens by real
    attention: the kept positions, and whether the count equals the shape-only one."""
    c = pc.llm
    spec = get_llm(c.llm)
    model = spec.build("cpu", weights=weights, attn=c.attn)
    real = count_llm(
        spec, c.visual_tokens, c.prompt_tokens, c.decode_tokens, c.lm_head, c.drop, c.attn, shape_only=False, model=model
    )
    return {
        "path": str(weights),
        "kept": [list(k) for k in real.kept],
        "prefill_macs": real.prefill_total("macs"),
        "prefill_macs_equal": real.prefill_total("macs") == c.prefill_total("macs"),
    }


def e2e_record(pc: PipelineCount, convention: str, kv_dtype: str) -> dict[str, Any]:
    """What ``e2e --json`` prints: the pipeline, ``stages`` (one row per stage: tokens in and the
    count in every convention), ``metrics`` (the record schema's names: ``vision_macs``, ...,
    ``kv_cache_bytes`` in ``kv_dtype``), ``PipelineCount.as_dict``'s detail, and the LLM stage in
    full under ``llm_stage`` (``LlmCount.as_dict``: per layer, textbook, caches)."""
    p = pc.pipeline
    d = pc.as_dict(convention)
    return {
        "pipeline_id": p.id,
        "variant_id": p.variant.id,
        "encoder": p.variant.encoder,
        "llm": p.llm,
        "prompt_tokens": p.prompt_tokens,
        "decode_tokens": p.decode_tokens,
        "drop": None if p.drop is None else drop_text(p.drop),
        "connector": p.connector_kind,
        "convention": convention,
        "unit": get_convention(convention).unit,
        "tokens": p.tokens,
        "kv_dtype": kv_dtype,
        "metrics": count_metrics(pc, kv_dtype),
        **{k: v for k, v in d.items() if k not in ("pipeline", "convention", "llm")},
        "llm_stage": d["llm"],
    }


def _g(x: float | int | None) -> str:
    return "n/a" if x is None else f"{x / 1e9:,.3f}"


def _stage_table(pc: PipelineCount, convention: str, kv_dtype: str) -> Table:
    conv = get_convention(convention)
    p = pc.pipeline
    t = Table(title=f"{p.id}  ({convention}: {conv.meaning})", title_justify="left")
    t.add_column("stage")
    t.add_column("tokens in", justify="right")
    t.add_column(conv.giga, justify="right")
    t.add_column("share before 1st token", justify="right")
    what = {
        "vision": f"vision ({p.variant.encoder}, {p.variant.id_plan()}, connector excluded)",
        "connector": f"connector ({p.connector_kind})",
        "prefill": f"prefill ({p.llm}: {p.tokens['visual']:,} visual + {p.prompt_tokens} prompt"
        + (f"; {drop_text(p.drop)}" if p.drop is not None else "")
        + ")",
        "decode": f"decode ({p.decode_tokens} tokens)",
    }
    for row in pc.table(convention):
        share = "" if row["share"] is None else f"{row['share']:.1%}"
        t.add_row(what[row["stage"]], f"{row['tokens_in']:,}", _g(row[conv.column]), share)
    t.add_row("[b]before the first token[/] (" + " + ".join(TTFT_STAGES) + ")", "", _g(pc.ttft(convention)), "100.0%")
    t.add_row("[b]total[/] (all stages)", "", _g(pc.total(convention)), "")
    per = pc.decode_per_token(convention)
    if per["mean"] is not None:
        t.add_row("decode, per generated token (mean)", "", _g(per["mean"]), "")
    t.add_row("prefill, causal attention charged dense", "", _g(pc.llm.prefill_total(convention, "dense")), "")
    tb = pc.llm.textbook()
    t.add_row("prefill, textbook formula (printed form, MACs)", "", _g(tb.total), "")
    kv = f"{format_bytes(pc.kv_cache_bytes(kv_dtype, 'prefill'))} / {format_bytes(pc.kv_cache_bytes(kv_dtype))}"
    t.add_row(f"KV cache after prefill / after decode ({kv_dtype}, bytes)", "", kv, "")
    return t


def _positions(pipeline: PipelineSpec, convention: str, as_json: bool) -> list[dict[str, Any]]:
    v = pipeline.variant
    if v.encoding == "view":
        raise UhdProfileError("--positions lists the options for a whole image; add --image WxH")
    rows = []
    ref_ttft = None
    for opt in position_options(v.size, v.encoding, v.encoder, pipeline.llm, pipeline.prompt_tokens, pipeline.decode_tokens):
        row: dict[str, Any] = {"position": opt.position, "option": opt.option, "pipeline_id": None, "error": opt.error}
        if opt.pipeline is not None:
            pc = count_pipeline(opt.pipeline)
            row.update(pipeline_id=opt.pipeline.id, tokens=opt.pipeline.tokens)
            row["stages"] = {c.column: pc.stages(c.name) for c in CONVENTIONS.values()}
            row["ttft"] = {c.column: pc.ttft(c.name) for c in CONVENTIONS.values()}
            if ref_ttft is None:
                ref_ttft = row["ttft"]
            row["ttft_reduction"] = {k: 1 - row["ttft"][k] / ref_ttft[k] if ref_ttft[k] else None for k in ref_ttft}
        rows.append(row)
    if not as_json:
        conv = get_convention(convention)
        t = Table(title=f"compression at every position: {v.size} image, {pipeline.llm} ({convention}, {conv.giga})")
        cols = ("position", "option", "ViT tokens", "LLM tokens", "vision", "connector", "prefill", "before 1st token", "change")
        for col in cols:
            t.add_column(col, justify="left" if col in ("position", "option") else "right")
        for r in rows:
            if r["pipeline_id"] is None:
                t.add_row(r["position"], r["option"], "", "", "", "", "", "not applicable", "")
                warn(f"{r['option']}: {r['error']}")
                continue
            s, red = r["stages"][conv.column], r["ttft_reduction"][conv.column]
            t.add_row(
                r["position"],
                r["option"],
                f"{r['tokens']['vision']:,}",
                f"{r['tokens']['visual']:,}",
                _g(s["vision"]),
                _g(s["connector"]),
                _g(s["prefill"]),
                _g(r["ttft"][conv.column]),
                "" if r["position"] == "reference" or red is None else f"{-red:+.1%}",
            )
        out.print(t)
    return rows


@click.command()
@variant_options(
    resolution_default=f"{DEFAULT_VIEW} (one slice); native is the encoder's size",
    post_ratio_help="connector ratio 1|4|16 (1 = a projector that merges nothing) [default: the tower family's "
    "(16x in total for the paper's towers); refused where the token grid does not divide]",
)
@click.option("--image", default=None, help="a whole image WxH (width first), encoded per --encoding, instead of one view")
@click.option("--encoding", default=None, help="sliced | global: how --image is encoded [default: sliced]")
@click.option("--max-slices", default=None, type=int, help=f"most slices per image (M) with --image [default: {MAX_SLICE_NUMS}]")
@click.option(
    "--scale-resolution",
    default=None,
    type=int,
    help=f"slice size S px with --image (a multiple of patch x 4) [default: {SCALE_RESOLUTION}]",
)
@llm_option
@click.option("--prompt-tokens", default=DEFAULT_PROMPT_TOKENS, type=int, show_default=True, help="text tokens after the image")
@click.option(
    "--decode-tokens", default=DEFAULT_DECODE_TOKENS, type=int, show_default=True, help="tokens generated after the first"
)
@click.option("--fastv", default=None, help="FastV-style drop K:R: after LLM layer K (0-based) drop R of the visual tokens")
@click.option(
    "--pyramid-drop", default=None, help="PyramidDrop-style drop LAYERS:RATIO, e.g. 7,15,23:0.5 (keep RATIO after each)"
)
@dtype_option(default="bf16", what="dtype of the KV-cache bytes shown", flag="--kv-dtype")
@convention_option
@click.option(
    "--llm-weights",
    default=None,
    metavar="DIR",
    help="a local checkpoint of --llm's geometry: also run the LLM stage for real on the CPU with its weights, so an "
    "in-LLM drop keeps the tokens real attention ranks first (counts are unchanged)",
)
@memory_options("per stage, both models resident")
@click.option("--positions", is_flag=True, help="also count every position's compression options for this --image")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def e2e(
    flags: VariantFlags,
    image: str | None,
    encoding: str | None,
    max_slices: int | None,
    scale_resolution: int | None,
    llm: str,
    prompt_tokens: int,
    decode_tokens: int,
    fastv: str | None,
    pyramid_drop: str | None,
    kv_dtype: str,
    convention: str,
    llm_weights: str | None,
    memory: bool,
    dtype: str | None,
    attn: str | None,
    memory_device: str | None,
    positions: bool,
    as_json: bool,
) -> None:
    """What one image costs the whole model: vision, connector, LLM prefill and decode, counted
    stage by stage by running the real modules (shapes only: nothing is materialised)."""
    get_convention(convention)
    kv_dtype = check_dtype(kv_dtype, "--kv-dtype")
    check_llm(llm)
    pipeline = pipeline_from_flags(
        flags,
        image,
        encoding,
        max_slices,
        scale_resolution,
        llm,
        prompt_tokens,
        decode_tokens,
        fastv,
        pyramid_drop,
    )
    if positions and pipeline.variant.encoding == "view":
        raise UhdProfileError("--positions lists the options for a whole image; add --image WxH")
    if llm_weights is not None:
        check_weights_dir(llm_weights)
    mem = memory_settings(memory, dtype, attn, memory_device, llm=llm, prompt_tokens=prompt_tokens, decode_tokens=decode_tokens)
    pc = count_pipeline(pipeline)
    if pc.uncounted_ops:
        warn(f"ops with no formula, NOT in the totals: {pc.uncounted_ops}")
    real = _with_weights(pc, llm_weights) if llm_weights is not None else None
    if as_json:
        rec = e2e_record(pc, convention, kv_dtype)
        if real is not None:
            rec["llm_weights"] = real
        if mem is not None:
            rec["memory"] = memory_json(_memory(pipeline, pc, mem), mem)
        if positions:
            rec["positions"] = _positions(pipeline, convention, as_json=True)
        click.echo(json.dumps(rec))
        return
    out.print(_stage_table(pc, convention, kv_dtype))
    if mem is not None:
        print_memory(_memory(pipeline, pc, mem), mem)
        if pipeline.drop is not None:
            note(
                "memory: the in-LLM drop is not modelled; the prediction keeps every visual token in every layer (an upper bound)"
            )
    if real is not None:
        same = "equal to" if real["prefill_macs_equal"] else "DIFFERENT from"
        say(f"with the weights of {real['path']}: the LLM stage run for real on the CPU, its prefill count {same} the shape-only")
        for i, kept in enumerate(real["kept"]):
            shown = ", ".join(map(str, kept[:16])) + (", ..." if len(kept) > 16 else "")
            say(f"drop stage {i + 1}: kept {len(kept)} visual tokens at positions {shown}")
    if convention == "paper":
        note("the paper convention does not charge the connector (the paper's scope) and charges causal attention dense")
    else:
        note(f"{convention}: causal attention in the prefill as executed (the allowed pairs only); the dense figure is shown")
    if positions:
        _positions(pipeline, convention, as_json=False)
