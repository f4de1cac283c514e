"""``uhd-profile image`` and ``uhd-profile dataset``: what real images cost, sliced vs global.

Thin: parse, call ``uhd_profile.analyse.images``, render. User mistakes raise ``UhdProfileError`` (one
line, exit 2, printed by ``cli.main``).
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import click
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from uhd_profile.analyse.images import (
    COUNT_COLUMNS,
    FAMILY_LLMS,
    PLANS,
    MemorySettings,
    add_llm_stages,
    cost_dataset,
    cost_image,
    cost_policies_dataset,
    cost_policy_image,
    draw_slicing,
    frame,
    histogram,
    image_size,
    list_files,
    llm_stage_counts,
    plan_spec,
    policies_histogram,
    policy_encoder,
    policy_memory,
    policy_plans,
    spec_memory,
    summarize,
    summarize_policies,
)
from uhd_profile.cli.console import err, note, out, say, warn
from uhd_profile.cli.options import convention_option
from uhd_profile.count.conventions import CONVENTIONS, get_convention
from uhd_profile.errors import UhdProfileError
from uhd_profile.files import check_output_dir, check_output_file, output_error
from uhd_profile.model.encoders import DEFAULT_ENCODER, get_encoder
from uhd_profile.model.llms import get_llm
from uhd_profile.model.policies import DEFAULT_POLICY, POLICIES, get_policy
from uhd_profile.model.slicing import (
    MAX_SLICE_NUMS,
    SCALE_RESOLUTION,
    check_image_size,
    check_params,
    global_resize,
    slice_image,
)
from uhd_profile.units import Size, format_bytes

_SIZE = re.compile(r"(-?\d+)x(-?\d+)")


def _choices(encoding: str) -> tuple[str, ...]:
    valid = {"sliced": ("sliced",), "global": ("global",), "both": ("global", "sliced")}
    if encoding not in valid:
        raise UhdProfileError(f"--encoding {encoding!r} is not valid; valid: sliced, global, both")
    return valid[encoding]


def _plans(variants: tuple[str, ...]) -> tuple[str, ...]:
    plans = tuple(dict.fromkeys(variants)) or PLANS
    for p in plans:
        if p not in PLANS:
            raise UhdProfileError(f"--variant {p!r} is not valid; valid: {', '.join(PLANS)} (repeat the option for several)")
    return plans


def _target(arg: str, exif_transpose: bool = False) -> tuple[str | None, Size]:
    """An image file -> (path, its size); a size ``WxH`` that is not a file -> (None, that size)."""
    m = _SIZE.fullmatch(arg)
    if m and not Path(arg).exists():
        return None, check_image_size(int(m.group(1)), int(m.group(2)))
    return arg, image_size(arg, exif_transpose)


def _g(v: float) -> str:
    return f"{v:,.1f}"


def image_reading_options(f):
    """--exif-transpose and --depth, shared by ``image`` and ``dataset``."""
    f = click.option(
        "--depth",
        default=None,
        type=int,
        help="layer index after which v4's compressor runs [default: 6, the paper's]",
    )(f)
    return click.option(
        "--exif-transpose",
        is_flag=True,
        help="size images as displayed (EXIF rotation applied) [default: as stored, like the MiniCPM-V 4.6 processor]",
    )(f)


# --------------------------------------------------------------------------------------------
# Image policies (--policy, --policy-param) and memory (--memory)
# --------------------------------------------------------------------------------------------


def policy_encoder_option(f):
    return click.option(
        "--encoder",
        default=None,
        help=f"encoder preset (uhd-profile list encoders) [default: the policy's own; {DEFAULT_ENCODER} under {DEFAULT_POLICY}]",
    )(f)


def policy_options(f):
    f = click.option(
        "--policy-param",
        "policy_params",
        multiple=True,
        metavar="NAME=VALUE",
        help="a parameter of the policy (uhd-profile list policies), e.g. max_pixels=12845056; repeatable",
    )(f)
    return click.option("--policy", default=None, help=f"image policy: {' | '.join(POLICIES)} [default: {DEFAULT_POLICY}]")(f)


def dataset_policy_options(f):
    f = click.option(
        "--policy-param",
        "policy_params",
        multiple=True,
        metavar="[POLICY:]NAME=VALUE",
        help="a parameter of a policy (uhd-profile list policies); without POLICY: every given policy that has it; repeatable",
    )(f)
    return click.option(
        "--policy",
        "policies",
        multiple=True,
        help=f"image policy ({' | '.join(POLICIES)}); repeat to put several side by side [default: {DEFAULT_POLICY}]",
    )(f)


def memory_options(f):
    """--memory and its settings, then the LLM options (``image``)."""
    return llm_options(memory_flags("per view and stage")(f))


def memory_flags(what: str):
    """A decorator adding --memory (predict the memory ``what``), --dtype, --attn and
    --memory-device (``image``, ``e2e``)."""
    opts = [
        click.option("--memory", is_flag=True, help=f"also predict the memory {what} (docs/memory.md)"),
        click.option("--dtype", default=None, help="with --memory: fp32 | bf16 | fp16 [default: bf16]"),
        click.option("--attn", default=None, help="with --memory: sdpa | eager (eager materialises the scores) [default: sdpa]"),
        click.option("--memory-device", default=None, help="with --memory: cuda | cpu, the device predicted for [default: cuda]"),
    ]

    def add(f):
        for o in reversed(opts):
            f = o(f)
        return f

    return add


def llm_options(f):
    opts = [
        click.option(
            "--llm",
            default=None,
            help="LLM preset (uhd-profile list llms): adds its prefill and decode to each image's cost, and is the LLM "
            "stage of --memory; none for no LLM [default: no LLM stage; with --memory the family's]",
        ),
        click.option("--prompt-tokens", default=None, type=int, help="with --llm: prompt tokens after the image [default: 64]"),
        click.option("--decode-tokens", default=None, type=int, help="with --llm: tokens generated [default: 0]"),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


@dataclass(frozen=True)
class LlmChoice:
    """``--llm NAME`` with its prompt and decode lengths: the LLM stages added to each image."""

    llm: str
    prompt_tokens: int = 64
    decode_tokens: int = 0


def llm_choice(llm: str | None, prompt_tokens: int | None, decode_tokens: int | None, memory: bool = False) -> LlmChoice | None:
    """The LLM stages to add (None without ``--llm`` or with ``--llm none``). ``--prompt-tokens``/
    ``--decode-tokens`` without an LLM to apply them to are refused (with ``--memory`` they set its
    LLM stage)."""
    if llm is None or llm.lower() == "none":
        given = [flag for flag, v in (("--prompt-tokens", prompt_tokens), ("--decode-tokens", decode_tokens)) if v is not None]
        if given and not (memory and llm is None):
            raise UhdProfileError(f"{given[0]} applies to an LLM stage; add --llm NAME (uhd-profile list llms) or --memory")
        return None
    get_llm(llm)
    for flag, v in (("--prompt-tokens", prompt_tokens), ("--decode-tokens", decode_tokens)):
        if v is not None and v < 0:
            raise UhdProfileError(f"{flag} {v}: must be >= 0")
    return LlmChoice(llm, 64 if prompt_tokens is None else prompt_tokens, decode_tokens or 0)


def memory_settings(policy: str, memory: bool, **given) -> MemorySettings | None:
    """The ``--memory`` settings (None without ``--memory``; its options alone are refused)."""
    if not memory:
        extra = [k for k in ("dtype", "attn", "memory_device") if given.get(k) is not None]
        if extra:
            raise UhdProfileError(f"--{extra[0].replace('_', '-')} applies to the memory prediction; add --memory")
        return None
    llm = given.get("llm")
    llm = FAMILY_LLMS[policy] if llm is None else (None if llm.lower() == "none" else llm)
    return MemorySettings(
        dtype=given.get("dtype") or "bf16",
        attn=given.get("attn") or "sdpa",
        device_kind=given.get("memory_device") or "cuda",
        llm=llm,
        prompt_tokens=64 if given.get("prompt_tokens") is None else given["prompt_tokens"],
        decode_tokens=given.get("decode_tokens") or 0,
    )


def llm_json(stages) -> list[dict]:
    """``image --json``'s ``llm_stages``: (encoding, plan, vision counts, LlmStages) -> objects with
    the vision (and connector) counts, both LLM stages and their sum per count column."""
    return [
        {
            "encoding": enc,
            "plan": plan,
            **st.to_json(),
            "vision": dict(vision),
            "total": {c: vision[c] + st.prefill[c] + st.decode[c] for c in COUNT_COLUMNS},
        }
        for enc, plan, vision, st in stages
    ]


def print_llm(stages, choice: LlmChoice, convention: str) -> None:
    """One table: per (encoding, plan), the vision (and connector) cost, the LLM prefill and
    decode, their sum and the vision share of the compute before the first token."""
    conv = get_convention(convention)
    col, unit = conv.column, conv.giga
    t = Table(
        title=f"end to end through {choice.llm} ({choice.prompt_tokens} prompt tokens, {choice.decode_tokens} decoded; "
        f"{unit}, {convention} convention)",
        title_justify="left",
    )
    for title in ("encoding", "plan", "LLM tokens in", f"vision {unit}", f"prefill {unit}", f"decode {unit}", f"total {unit}"):
        t.add_column(title, justify="left" if title in ("encoding", "plan") else "right")
    t.add_column("vision share before 1st token", justify="right")
    for enc, plan, vision, st in stages:
        first = vision[col] + st.prefill[col]
        t.add_row(
            enc,
            plan,
            f"{st.visual_tokens + st.prompt_tokens:,}",
            _g(vision[col] / 1e9),
            _g(st.prefill[col] / 1e9),
            _g(st.decode[col] / 1e9),
            _g((first + st.decode[col]) / 1e9),
            f"{100 * vision[col] / first:.1f}%" if first else "-",
        )
    out.print(t)


def policy_param_values(policies: list[str], texts) -> dict[str, dict]:
    """``[POLICY:]NAME=VALUE`` texts -> {policy: {name: typed value}} for every policy in
    ``policies`` (unknown policies and names, unparsable values and repeats are one-line errors)."""
    for name in policies:
        get_policy(name)
    out: dict[str, dict] = {name: {} for name in policies}
    for text in texts:
        head, sep, value = str(text).partition("=")
        if not sep or not head.strip():
            raise UhdProfileError(f"--policy-param {text!r} is not valid; write NAME=VALUE, e.g. max_pixels=12845056")
        owner, colon, name = head.strip().rpartition(":")
        if colon:
            if owner not in policies:
                raise UhdProfileError(
                    f"--policy-param {text!r} names policy {owner!r}, which is not given; given: {', '.join(policies)}"
                )
            targets = [owner]
        else:
            targets = [p for p in policies if name in get_policy(p).defaults]
            if not targets:
                valid = "; ".join(f"{p}: {', '.join(get_policy(p).defaults) or 'none'}" for p in policies)
                raise UhdProfileError(f"--policy-param {text!r}: no given policy has a parameter {name!r}; valid: {valid}")
        for p in targets:
            if name in out[p]:
                raise UhdProfileError(f"--policy-param {name} is given twice for {p}; give it once")
            out[p].update(get_policy(p).parse_params({name: value}))
    return out


def refuse_minicpm_options(policy: str, **given) -> None:
    for k, v in given.items():
        if v is not None:
            raise UhdProfileError(
                f"--{k.replace('_', '-')} applies to the {DEFAULT_POLICY} policy (its slicing and encodings); {policy} is set "
                "with --policy-param NAME=VALUE (uhd-profile list policies)"
            )


def minicpm_params(params: dict, max_slices: int | None, scale_resolution: int | None) -> tuple[int, int, dict]:
    """``--max-slices``/``--scale-resolution`` and the policy's ``max_slice_nums``/
    ``scale_resolution`` are the same knobs: both given and different is refused. Returns (M, S, the
    policy's parameters with them)."""
    out = []
    for flag, key, value, default in (
        ("--max-slices", "max_slice_nums", max_slices, MAX_SLICE_NUMS),
        ("--scale-resolution", "scale_resolution", scale_resolution, SCALE_RESOLUTION),
    ):
        if value is not None and key in params and params[key] != value:
            raise UhdProfileError(f"{flag} {value} and --policy-param {key}={params[key]} disagree; give one")
        out.append(value if value is not None else params.get(key, default))
    return out[0], out[1], {**params, "max_slice_nums": out[0], "scale_resolution": out[1]}


def _extras_text(views) -> str:
    if not views.extras:
        return "no extra tokens"
    parts = [f"{e.count} {e.name} ({e.kind}, {e.added_by})" for e in views.extras]
    return f"extra tokens: {', '.join(parts)}"


def image_under_policy(
    paths,
    policy: str,
    params: dict,
    variants,
    encoder,
    convention: str,
    as_json: bool,
    memory,
    exif_transpose=False,
    depth=None,
    llm: LlmChoice | None = None,
) -> None:
    """``image`` for a family other than minicpm-v-4.6: the policy's views on its own tower."""
    conv = get_convention(convention)
    col, unit = conv.column, conv.giga
    plans = policy_plans(policy, tuple(variants) or None)
    encoder = policy_encoder(policy, encoder)
    targets = (_target(a, exif_transpose) for a in paths)
    costs = [cost_policy_image(w, h, policy, params, plans, encoder, path=p, depth=depth) for p, (w, h) in targets]
    memories = [[("policy", plan, policy_memory(c, plan, memory, depth)) for plan in plans] if memory else [] for c in costs]
    stages = [
        [("policy", p, c.counts[p], llm_stage_counts(llm.llm, c.llm_tokens, llm.prompt_tokens, llm.decode_tokens)) for p in plans]
        if llm
        else []
        for c in costs
    ]
    if as_json:
        objs = []
        for c, mem, st in zip(costs, memories, stages):
            d = {
                "path": c.path,
                "size": list(c.size),
                "policy": policy,
                "policy_params": c.views.to_dict()["params"],
                "encoder": c.encoder,
                "plans": list(plans),
                "convention": convention,
                "convention_help": conv.meaning,
                "policy_views": c.to_json(convention),
            }
            if memory is not None:
                d["memory"] = memory_json(mem, memory)
            if llm is not None:
                d["llm_stages"] = llm_json(st)
            objs.append(d)
        click.echo(json.dumps(objs))
        return
    for c, mem, st in zip(costs, memories, stages):
        t = Table(
            title=f"{c.path or '(size only)'}: {c.size} px (w x h), policy {policy}, {c.encoder}; {unit} in the {convention} "
            f"convention ({conv.meaning})",
            title_justify="left",
        )
        for title in ("view", "size (w x h)", "patches (w x h)", "ViT tokens", "LLM tokens", *(f"{unit} {p}" for p in plans)):
            t.add_column(title, justify="left" if title == "view" else "right")
        for v, vc in zip(c.views.views, c.view_counts):
            label = v.role if v.position is None else f"{v.role} {v.position[0]},{v.position[1]}"
            t.add_row(
                label,
                f"{v.size[0]}x{v.size[1]}",
                f"{v.patches[0]}x{v.patches[1]}",
                f"{v.vit_tokens:,}",
                f"{v.llm_tokens:,}",
                *(_g(vc[p][col] / 1e9) for p in plans),
            )
        n = len(c.views.views)
        what = f"{n} view" + ("s" if n > 1 else "") + (f", grid {c.views.grid[0]}x{c.views.grid[1]}" if c.views.grid else "")
        t.add_row(
            f"[b]total[/] ({what})",
            "",
            "",
            f"[b]{c.views.vit_tokens:,}[/]",
            f"[b]{c.views.view_llm_tokens:,}[/]",
            *(f"[b]{_g(c.counts[p][col] / 1e9)}[/]" for p in plans),
        )
        out.print(t)
        say(f"{_extras_text(c.views)}; LLM tokens in all: {c.views.llm_tokens:,}")
        for line in (*c.views.notes, *c.notes):
            note(line)
        if memory is not None:
            print_memory(mem, memory)
        if llm is not None:
            print_llm(st, llm, convention)


def minicpm_json(r, convention: str, params: dict, memory, depth: int | None = None) -> dict:
    """``image --json`` of one image under minicpm-v-4.6: today's object, plus ``policy``,
    ``policy_params``, ``policy_views`` (the policy's views with extras) and ``memory``."""
    d = r.to_json(convention)
    d.update(policy=DEFAULT_POLICY, policy_params=dict(params))
    if get_encoder(r.encoder).patch == get_policy(DEFAULT_POLICY).patch:
        w, h = r.size
        views = cost_policy_image(w, h, DEFAULT_POLICY, params, r.plans, r.encoder, depth=depth, path=r.path)
        d["policy_views"] = views.to_json(convention)
    if memory is not None:
        d["memory"] = memory_json(minicpm_memory(r, params, memory, depth), memory)
    return d


def print_minicpm_extras(r, params: dict) -> None:
    if "sliced" in r.encodings:
        views = get_policy(DEFAULT_POLICY).views(*r.size, **params)
        total = r.encodings["sliced"].llm_tokens[r.plans[0]] + views.extra_tokens
        say(f"sliced: {_extras_text(views)}; LLM tokens in all: {total:,}")


def minicpm_memory(r, params: dict, memory, depth: int | None = None) -> list:
    """(encoding, plan, MemoryPrediction) for every encoding and plan of a minicpm-v-4.6 image."""
    out = []
    extras = get_policy(DEFAULT_POLICY).views(*r.size, **params).extra_tokens
    for enc in r.encodings:
        for plan in r.plans:
            spec = plan_spec(
                plan,
                r.encoder,
                r.size,
                depth,
                encoding=enc,
                max_slices=params["max_slice_nums"],
                scale_resolution=params["scale_resolution"],
            )
            tokens = spec.tokens_llm + (extras if enc == "sliced" else 0)
            out.append((enc, plan, spec_memory(spec, memory, tokens)))
    return out


def minicpm_llm(r, params: dict, llm: LlmChoice) -> list:
    """(encoding, plan, vision counts, LlmStages) for every encoding and plan of a minicpm-v-4.6
    image: the LLM sees the plan's visual tokens plus, sliced, the policy's extras."""
    extras = get_policy(DEFAULT_POLICY).views(*r.size, **params).extra_tokens
    out = []
    for enc, e in r.encodings.items():
        for p in r.plans:
            tokens = e.llm_tokens[p] + (extras if enc == "sliced" else 0)
            out.append((enc, p, e.counts[p], llm_stage_counts(llm.llm, tokens, llm.prompt_tokens, llm.decode_tokens)))
    return out


def memory_json(entries, memory) -> list[dict]:
    return [
        {"encoding": enc, "plan": plan, "llm": memory.llm, "prompt_tokens": memory.prompt_tokens, **pred.as_dict()}
        for enc, plan, pred in entries
    ]


def print_memory(entries, memory) -> None:
    """One table: every stage (and vision call) of every (encoding, plan), and its peak."""
    llm = f", LLM {memory.llm} with {memory.prompt_tokens} prompt tokens" if memory.llm else ", vision stage only"
    if memory.llm and memory.decode_tokens:
        llm += f" and {memory.decode_tokens} decoded"
    t = Table(
        title=f"predicted memory (the memory model; {memory.dtype}, {memory.attn} attention, for {memory.device_kind}{llm})",
        title_justify="left",
    )
    for title in ("encoding", "plan", "stage", "what", "weights", "held", "activations", "of which scores", "KV cache", "peak"):
        t.add_column(title, justify="left" if title in ("encoding", "plan", "stage", "what") else "right")
    for enc, plan, pred in entries:
        for v in pred.views:
            t.add_row(
                enc,
                plan,
                "vision call",
                v.label,
                "",
                format_bytes(v.held_bytes),
                format_bytes(v.activation_bytes),
                format_bytes(v.score_bytes),
                "",
                "",
            )
        for s in pred.stages:
            t.add_row(
                enc,
                plan,
                s.stage,
                escape(s.label),
                format_bytes(s.weights_bytes),
                format_bytes(s.held_bytes),
                format_bytes(s.activation_bytes),
                format_bytes(s.score_bytes),
                format_bytes(s.kv_cache_bytes) if s.stage != "vision" else "",
                "",
            )
        t.add_row(
            enc,
            plan,
            "[b]peak[/]",
            f"in {pred.peak_stage.stage}, all weights resident",
            f"[b]{format_bytes(pred.weights_bytes)}[/]",
            "",
            "",
            "",
            "",
            f"[b]{format_bytes(pred.peak_bytes)}[/]",
            end_section=True,
        )
    out.print(t)


def dataset_under_policies(
    directory,
    out_dir,
    max_slices,
    scale_resolution,
    variants,
    encoder,
    convention,
    policies,
    policy_params,
    exif_transpose=False,
    depth=None,
    llm: LlmChoice | None = None,
):
    """``dataset`` with --policy: every image under each policy, side by side."""
    conv = get_convention(convention)
    params = policy_param_values(list(policies), policy_params)
    if DEFAULT_POLICY in policies:
        max_slices, scale_resolution, params[DEFAULT_POLICY] = minicpm_params(
            params[DEFAULT_POLICY], max_slices, scale_resolution
        )
        encoder = encoder or DEFAULT_ENCODER
        check_params(max_slices, scale_resolution, get_encoder(encoder).patch * 4)
        plans = policy_plans(DEFAULT_POLICY, tuple(variants) or None)
    else:
        refuse_minicpm_options(policies[0], max_slices=max_slices, scale_resolution=scale_resolution)
        for p in policies:
            policy_encoder(p, encoder)
            policy_plans(p, tuple(variants) or None)
        max_slices, scale_resolution, plans = MAX_SLICE_NUMS, SCALE_RESOLUTION, None
    files, dest = _dataset_files(directory, out_dir)
    with _progress("costing images", len(files)) as advance:
        rows, skipped = cost_policies_dataset(
            files,
            [(p, params[p]) for p in policies],
            encoder,
            plans,
            max_slices,
            scale_resolution,
            progress=advance,
            depth=depth,
            exif_transpose=exif_transpose,
        )
    if llm is not None:
        rows = with_llm(rows, llm, max_slices, scale_resolution)
    df = frame(rows)
    if "extra_tokens" in df:
        df["extra_tokens"] = df["extra_tokens"].astype("Int64")
    summary = summarize_policies(rows)
    meta = {
        "directory": str(directory),
        "policies": [{"name": p, "params": _jsonable(params[p])} for p in policies],
        "encoders": {p: policy_encoder(p, encoder if p == DEFAULT_POLICY else None) for p in policies},
        "plans": {p: list(policy_plans(p, plans if p == DEFAULT_POLICY else None)) for p in policies},
        "max_slices": max_slices if DEFAULT_POLICY in policies else None,
        "scale_resolution": scale_resolution if DEFAULT_POLICY in policies else None,
        **_results_meta(
            rows,
            skipped,
            summary,
            {
                "llm_tokens": "visual tokens to the LLM",
                "extra_tokens": "other tokens the LLM sees for the image (policy extras; not for global encoding)",
            },
            llm,
        ),
    }
    _write_dataset(dest, df, summary, meta, policies_histogram(rows, convention))
    unit = conv.giga
    title = f"{meta['images']} images in {directory} under {', '.join(policies)} ({unit}, {convention} convention)"
    out.print(_summary_table(summary, ("policy", "encoding", "plan"), title, conv.column, unit, sort=False))
    out.print(f"wrote {dest}/per_image.csv, summary.csv, summary.json, histogram.png")
    if llm is not None:
        print_dataset_llm(summary, llm, convention)
    for p in policies:
        if p != DEFAULT_POLICY:
            note(f"{p}: FLOPs are its tower alone (post-ratio 1); LLM tokens are the family's own")
    for s in skipped:
        err.print(f"skipped: {s['reason']}", markup=False, highlight=False)


def _jsonable(params: dict) -> dict:
    return {k: ([list(x) for x in v] if isinstance(v, tuple) else v) for k, v in params.items()}


@click.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--encoding", default=None, help="sliced | global | both (minicpm-v-4.6 policy) [default: both]")
@click.option(
    "--max-slices",
    default=None,
    type=int,
    help=f"most slices per image (M); the global view has at most M x S^2 px [default: {MAX_SLICE_NUMS}]",
)
@click.option(
    "--scale-resolution",
    default=None,
    type=int,
    help=f"slice size S in px (area S^2), a multiple of patch x 4 [default: {SCALE_RESOLUTION}]",
)
@click.option("--variant", "variants", multiple=True, help=f"{' | '.join(PLANS)}; repeat for several [default: all]")
@policy_encoder_option
@convention_option
@image_reading_options
@click.option("--json", "as_json", is_flag=True, help="print a JSON list, one object per image")
@click.option(
    "--draw",
    "draw_path",
    default=None,
    help="write the image with its slice grid and thumbnail to this PNG "
    "(several images: -<image name> is added before the suffix)",
)
@policy_options
@memory_options
def image(
    paths,
    encoding,
    max_slices,
    scale_resolution,
    variants,
    encoder,
    convention,
    exif_transpose,
    depth,
    as_json,
    draw_path,
    policy,
    policy_params,
    **mem,
):
    """Views, tokens and FLOPs of each image (PATH: an image file, or a size WxH) under an image
    policy (default minicpm-v-4.6: encoded sliced, thumbnail + grid of slices, and globally, one
    resized view, per compression plan); --memory adds the predicted memory per stage."""
    policy = policy or DEFAULT_POLICY
    params = policy_param_values([policy], policy_params)[policy]
    memory = memory_settings(policy, **mem)
    llm = llm_choice(mem.get("llm"), mem.get("prompt_tokens"), mem.get("decode_tokens"), bool(mem.get("memory")))
    if policy != DEFAULT_POLICY:
        refuse_minicpm_options(
            policy, encoding=encoding, max_slices=max_slices, scale_resolution=scale_resolution, draw=draw_path
        )
        return image_under_policy(
            paths, policy, params, variants, encoder, convention, as_json, memory, exif_transpose, depth, llm
        )
    max_slices, scale_resolution, params = minicpm_params(params, max_slices, scale_resolution)
    encoding, encoder = encoding or "both", encoder or DEFAULT_ENCODER
    conv = get_convention(convention)
    col = conv.column
    encodings = _choices(encoding)
    plans = _plans(variants)
    align = get_encoder(encoder).patch * 4  # VariantSpec.align
    check_params(max_slices, scale_resolution, align)
    if draw_path is not None:
        check_output_file(draw_path, "--draw")
    targets = [_target(p, exif_transpose) for p in paths]
    if draw_path is not None:
        sizes_only = [str(size) for p, size in targets if p is None]
        if sizes_only:
            raise UhdProfileError(f"--draw needs image files, but {sizes_only[0]} is a size; give the image's path")
    results = [
        cost_image(w, h, encoder, plans, encodings, max_slices, scale_resolution, path=p, depth=depth) for p, (w, h) in targets
    ]
    if "global" in encodings:  # an image too thin for aligned views: its global view was cut to the cap
        for _, (w, h) in targets:
            capped = global_resize(w, h, max_slices, scale_resolution, align).note
            if capped:
                warn(capped)
    if draw_path is not None:
        base = Path(draw_path)
        seen: dict[str, int] = {}
        for p, (w, h) in targets:
            dest = base
            if len(targets) > 1:
                stem = Path(p).stem
                seen[stem] = seen.get(stem, 0) + 1
                tag = stem if seen[stem] == 1 else f"{stem}-{seen[stem]}"
                dest = base.with_name(f"{base.stem}-{tag}{base.suffix or '.png'}")
            sl = slice_image(w, h, max_slices, scale_resolution, align)
            gv = global_resize(w, h, max_slices, scale_resolution, align) if "global" in encodings else None
            try:
                picture = draw_slicing(p, sl, gv, exif_transpose=exif_transpose)
                dest.parent.mkdir(parents=True, exist_ok=True)
                picture.save(dest, format="PNG")
            except OSError as exc:
                raise UhdProfileError(f"--draw: could not draw {p} into {dest}: {str(exc).splitlines()[0]}") from None
            err.print(f"wrote {dest}", markup=False, highlight=False)
    if as_json:
        objs = [minicpm_json(r, convention, params, memory, depth) for r in results]
        if llm is not None:
            for d, r in zip(objs, results):
                d["llm_stages"] = llm_json(minicpm_llm(r, params, llm))
        click.echo(json.dumps(objs))
        return
    unit = conv.giga
    for r in results:
        name = r.path or "(size only)"
        t = Table(
            title=f"{name}: {r.size} px (w x h), {r.encoder}; {unit} in the {convention} convention ({conv.meaning})",
            title_justify="left",
        )
        for title in (
            "encoding",
            "view",
            "size (w x h)",
            "patches (w x h)",
            "ViT tokens",
            *(f"LLM tokens {p}" for p in plans),
            *(f"{unit} {p}" for p in plans),
        ):
            t.add_column(title, justify="left" if title in ("encoding", "view") else "right")
        for enc, e in r.encodings.items():
            for i, v in enumerate(e.views):
                label = v.role if v.role != "slice" else f"slice {i}"
                t.add_row(
                    enc,
                    label,
                    str(v.size),
                    f"{v.grid[1]}x{v.grid[0]}",
                    f"{v.vit_tokens:,}",
                    *(f"{v.llm_tokens[p]:,}" for p in plans),
                    *(_g(v.counts[p][col] / 1e9) for p in plans),
                )
            n = f"{len(e.views)} view" + ("s" if len(e.views) > 1 else "")
            what = f"{n}, grid {e.grid[0]}x{e.grid[1]} (cols x rows)" if e.grid else (f"{n}, no grid" if enc == "sliced" else n)
            t.add_row(
                f"[b]{enc} total[/]",
                what,
                "",
                "",
                f"[b]{e.vit_tokens:,}[/]",
                *(f"[b]{e.llm_tokens[p]:,}[/]" for p in plans),
                *(f"[b]{_g(e.counts[p][col] / 1e9)}[/]" for p in plans),
                end_section=True,
            )
        out.print(t)
        if len(r.encodings) == 2:
            g, s = r.encodings["global"], r.encodings["sliced"]
            for p in plans:
                ratio = s.counts[p][col] / g.counts[p][col]
                out.print(
                    f"{p}: sliced / global = {ratio:.2f}x the {unit}, {s.llm_tokens[p] / g.llm_tokens[p]:.2f}x the LLM tokens"
                )
        print_minicpm_extras(r, params)
        if memory is not None:
            print_memory(minicpm_memory(r, params, memory, depth), memory)
        if llm is not None:
            print_llm(minicpm_llm(r, params, llm), llm, convention)


def _summary_table(summary, keys: tuple[str, ...], title: str, col: str, unit: str, sort: bool) -> Table:
    """The dataset summary as printed: per group of ``keys``, LLM tokens and cost (mean, median,
    p90, total; cost in ``unit`` of count column ``col``)."""
    t = Table(title=title, title_justify="left")
    for name in (*keys, "LLM tokens mean", "median", "p90", f"{unit} mean", "median", "p90", f"{unit} total"):
        t.add_column(name, justify="left" if name in keys else "right")
    if not summary.empty:
        for key, g in summary.groupby(list(keys), sort=sort):
            tok = g[g.metric == "llm_tokens"].iloc[0]
            fl = g[g.metric == col].iloc[0]
            t.add_row(
                *(str(k) for k in key),
                f"{tok['mean']:,.0f}",
                f"{tok['median']:,.0f}",
                f"{tok['p90']:,.0f}",
                _g(fl["mean"] / 1e9),
                _g(fl["median"] / 1e9),
                _g(fl["p90"] / 1e9),
                _g(fl["total"] / 1e9),
            )
    return t


def with_llm(rows: list[dict], choice: LlmChoice, max_slices: int, scale_resolution: int) -> list[dict]:
    """``dataset --llm``: every row with its LLM stages (``add_llm_stages``), with a progress bar
    (each distinct token count is one count of the LLM)."""
    with _progress(f"counting {choice.llm}", len(rows)) as advance:
        out = []
        for r in rows:
            out.extend(add_llm_stages([r], choice.llm, choice.prompt_tokens, choice.decode_tokens, max_slices, scale_resolution))
            advance(r)
    return out


def llm_meta(choice: LlmChoice | None) -> dict:
    """``summary.json``'s ``llm`` entry (none without ``--llm``)."""
    if choice is None:
        return {}
    return {
        "llm": {
            "name": choice.llm,
            "prompt_tokens": choice.prompt_tokens,
            "decode_tokens": choice.decode_tokens,
            "columns": "llm_input_tokens (visual tokens and the policy's extras), llm_prefill_<count>, llm_decode_<count>, "
            "total_<count> (vision and connector plus both LLM stages)",
        }
    }


def print_dataset_llm(summary, choice: LlmChoice, convention: str) -> None:
    """The dataset's end-to-end table: per (policy,) encoding and plan, mean vision, prefill and total."""
    conv = get_convention(convention)
    col, unit = conv.column, conv.giga
    keys = [k for k in ("policy", "encoding", "plan") if k in summary]
    t = Table(
        title=f"end to end through {choice.llm} ({choice.prompt_tokens} prompt tokens, {choice.decode_tokens} decoded; "
        f"mean per image, {unit}, {convention} convention)",
        title_justify="left",
    )
    for title in (*keys, "LLM tokens in", f"vision {unit}", f"prefill {unit}", f"decode {unit}", f"total {unit}", "total p90"):
        t.add_column(title, justify="left" if title in keys else "right")
    for key, g in summary.groupby(keys, sort=False):
        m = dict(zip(g.metric, g["mean"]))
        p90 = dict(zip(g.metric, g["p90"]))
        t.add_row(
            *(str(k) for k in (key if isinstance(key, tuple) else (key,))),
            f"{m['llm_input_tokens'] + choice.prompt_tokens:,.0f}",
            _g(m[col] / 1e9),
            _g(m[f"llm_prefill_{col}"] / 1e9),
            _g(m[f"llm_decode_{col}"] / 1e9),
            _g(m[f"total_{col}"] / 1e9),
            _g(p90[f"total_{col}"] / 1e9),
        )
    out.print(t)


def _results_meta(rows: list[dict], skipped: list[dict], summary, units: dict[str, str], llm: LlmChoice | None) -> dict:
    """The part of ``summary.json`` both dataset paths share: image count, skipped files, units
    (``vit_tokens``, ``units``, every count column), conventions, the summary and the LLM entry."""
    return {
        "images": len({r["path"] for r in rows}),
        "skipped": skipped,
        "units": {
            "vit_tokens": "tokens",
            **units,
            **{c.column: f"{c.unit} ({c.name} convention)" for c in CONVENTIONS.values()},
        },
        "conventions": {c.name: c.meaning for c in CONVENTIONS.values()},
        "summary": summary.to_dict(orient="records"),
        **llm_meta(llm),
    }


def _write_dataset(dest: Path, per_image, summary, meta: dict, fig) -> None:
    """The dataset's four files, written in one go after everything is computed (an ``OSError`` is
    one line: ``_writing``)."""
    with _writing(dest):
        dest.mkdir(parents=True, exist_ok=True)
        per_image.to_csv(dest / "per_image.csv", index=False)
        summary.to_csv(dest / "summary.csv", index=False)
        (dest / "summary.json").write_text(json.dumps(meta, indent=1))
        fig.savefig(dest / "histogram.png", dpi=110)


def _dataset_files(directory, out_dir) -> tuple[list, Path]:
    """The files of ``dataset DIRECTORY`` (none is a one-line error) and its checked output folder."""
    files = list_files(directory)
    if not files:
        raise UhdProfileError(f"{directory}: holds no files; give a folder of images")
    dest = check_output_dir(Path(out_dir) if out_dir else Path(f"dataset-{Path(directory).resolve().name}"), "--out")
    return files, dest


@contextlib.contextmanager
def _progress(what: str, total: int):
    """A transient progress bar on stderr; yields ``advance(item)``, called once per item done."""
    with Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task(what, total=total)
        yield lambda _item: bar.advance(task)


@contextlib.contextmanager
def _writing(dest: Path):
    """An ``OSError`` while writing the dataset's files, as one line (exit 2 or 3)."""
    try:
        yield
    except OSError as exc:
        raise output_error(exc, dest, "--out", kept="files written there before may be incomplete") from None


@click.command()
@click.argument("directory")
@click.option("--out", "out_dir", default=None, help="output folder [default: ./dataset-<DIRECTORY name>]")
@click.option("--max-slices", default=None, type=int, help=f"most slices per image (M) [default: {MAX_SLICE_NUMS}]")
@click.option(
    "--scale-resolution",
    default=None,
    type=int,
    help=f"slice size S in px, a multiple of patch x 4 [default: {SCALE_RESOLUTION}]",
)
@click.option("--variant", "variants", multiple=True, help=f"{' | '.join(PLANS)}; repeat for several [default: all]")
@policy_encoder_option
@convention_option
@image_reading_options
@dataset_policy_options
@llm_options
def dataset(
    directory,
    out_dir,
    max_slices,
    scale_resolution,
    variants,
    encoder,
    convention,
    exif_transpose,
    depth,
    policies,
    policy_params,
    llm,
    prompt_tokens,
    decode_tokens,
):
    """Per-image cost of every image in DIRECTORY, global vs sliced, per plan: per_image.csv,
    summary.csv/summary.json (mean, median, p90, total) and histogram.png. Unreadable files are
    listed and skipped. --policy (repeatable) puts several families side by side."""
    policies = tuple(dict.fromkeys(policies))
    choice = llm_choice(llm, prompt_tokens, decode_tokens)
    if policies and policies != (DEFAULT_POLICY,) or policy_params:
        return dataset_under_policies(
            directory,
            out_dir,
            max_slices,
            scale_resolution,
            variants,
            encoder,
            convention,
            policies or (DEFAULT_POLICY,),
            policy_params,
            exif_transpose,
            depth,
            choice,
        )
    encoder = encoder or DEFAULT_ENCODER
    max_slices = MAX_SLICE_NUMS if max_slices is None else max_slices
    scale_resolution = SCALE_RESOLUTION if scale_resolution is None else scale_resolution
    conv = get_convention(convention)
    plans = _plans(variants)
    check_params(max_slices, scale_resolution, get_encoder(encoder).patch * 4)
    files, dest = _dataset_files(directory, out_dir)
    with _progress("costing images", len(files)) as advance:
        rows, skipped = cost_dataset(files, encoder, plans, max_slices, scale_resolution, advance, depth, exif_transpose)
    if choice is not None:
        rows = with_llm(rows, choice, max_slices, scale_resolution)
    summary = summarize(rows)
    meta = {
        "directory": str(directory),
        "encoder": encoder,
        "plans": list(plans),
        "max_slices": max_slices,
        "scale_resolution": scale_resolution,
        **_results_meta(rows, skipped, summary, {"llm_tokens": "tokens"}, choice),
    }
    _write_dataset(dest, frame(rows), summary, meta, histogram(rows, convention))
    unit = conv.giga
    title = f"{meta['images']} images in {directory} ({encoder}; {unit}, {convention} convention)"
    out.print(_summary_table(summary, ("encoding", "plan"), title, conv.column, unit, sort=True))
    out.print(f"wrote {dest}/per_image.csv, summary.csv, summary.json, histogram.png")
    if choice is not None:
        print_dataset_llm(summary, choice, convention)
    for s in skipped:
        err.print(f"skipped: {s['reason']}", markup=False, highlight=False)
