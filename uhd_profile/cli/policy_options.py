"""The options of the commands that cost items under a policy (``image``, ``dataset``, ``plan``),
and the one place that turns them into the API's values: policy parameters, encodings,
variants, ``LlmSettings`` and ``MemorySettings``. Every rule is a policy's data
(``uhd_profile.model.policies``), never a family's name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click

from uhd_profile.analyse.cost import DEFAULT_PROMPT_TOKENS, VARIANTS, LlmSettings, MemorySettings, PolicyChoice
from uhd_profile.analyse.images import image_size
from uhd_profile.cli import options
from uhd_profile.cli.options import depth_option, encoder_option, policy_option
from uhd_profile.errors import UhdProfileError
from uhd_profile.model.policies import DEFAULT_POLICY, Policy, get_policy
from uhd_profile.model.slicing import MAX_SLICE_NUMS, SCALE_RESOLUTION, check_image_size
from uhd_profile.units import Size

_SIZE = re.compile(r"(-?\d+)x(-?\d+)")
ENCODING_CHOICES = ("sliced", "global", "both")
KNOB_FLAGS = {"max_slices": "max_slice_nums", "scale_resolution": "scale_resolution"}
"""Flags that are another spelling of a policy parameter (``--max-slices M`` is ``max_slice_nums=M``)."""


def target(arg: str, exif_transpose: bool = False) -> tuple[str | None, Size]:
    """An image file -> (path, its size); a size ``WxH`` that is not a file -> (None, that size)."""
    m = _SIZE.fullmatch(arg)
    if m and not Path(arg).exists():
        return None, check_image_size(int(m.group(1)), int(m.group(2)))
    return arg, image_size(arg, exif_transpose)


# --------------------------------------------------------------------------------------------
# Decorators
# --------------------------------------------------------------------------------------------


def _add(f, opts):
    for o in reversed(opts):
        f = o(f)
    return f


def policy_param_option(several_policies: bool):
    """--policy-param ``[POLICY:]NAME=VALUE`` (``POLICY:`` where several policies may be given),
    read by ``policy_param_values``."""
    return click.option(
        "--policy-param",
        "policy_params",
        multiple=True,
        metavar="[POLICY:]NAME=VALUE" if several_policies else "NAME=VALUE",
        help="a parameter of the policy over its processor default (uhd-profile list policies), e.g. "
        "max_pixels=12845056; repeatable",
    )


def item_options(several_policies: bool):
    """--policy (repeatable when ``several_policies``), --policy-param, --encoding, --max-slices,
    --scale-resolution, --variant, --encoder, --depth and --exif-transpose."""
    opts = [
        policy_option(multiple=several_policies),
        policy_param_option(several_policies),
        click.option(
            "--encoding",
            default=None,
            help="sliced | global | both, for a policy with several encodings (minicpm-v-4.6) [default: both]",
        ),
        click.option(
            "--max-slices",
            default=None,
            type=int,
            help=f"most slices per image (M), the policy parameter max_slice_nums [default: {MAX_SLICE_NUMS}]",
        ),
        click.option(
            "--scale-resolution",
            default=None,
            type=int,
            help=f"slice size S in px (area S^2), a multiple of patch x 4, the policy parameter scale_resolution "
            f"[default: {SCALE_RESOLUTION}]",
        ),
        click.option(
            "--variant",
            "variants",
            multiple=True,
            help=f"vision design: {' | '.join(VARIANTS)} (those the policy has); repeat for several "
            "[default: the policy's, baseline and v4 for minicpm-v-4.6, vit for the others]",
        ),
        encoder_option(default=None, default_text="the policy's own; another only where the policy lets it be swapped"),
        depth_option(default_text="6, the paper's, for the v4 variant"),
        click.option(
            "--exif-transpose",
            is_flag=True,
            help="size images as displayed (EXIF rotation applied) [default: as stored, as the processors see them]",
        ),
    ]
    return lambda f: _add(f, opts)


def llm_options(f):
    """--llm, --prompt-tokens, --decode-tokens."""
    return _add(
        f,
        [
            click.option(
                "--llm",
                default=None,
                help="LLM preset (uhd-profile list llms): adds its prefill and decode to each item's cost, and is the "
                "LLM stage of --memory; none for no LLM [default: no LLM stage; with --memory the family's]",
            ),
            click.option(
                "--prompt-tokens",
                default=None,
                type=int,
                help=f"with --llm: prompt tokens after the item [default: {DEFAULT_PROMPT_TOKENS}]",
            ),
            click.option("--decode-tokens", default=None, type=int, help="with --llm: tokens generated [default: 0]"),
        ],
    )


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------


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


def with_knob_flags(policies: list[str], params: dict[str, dict], **flags: int | None) -> dict[str, dict]:
    """``--max-slices``/``--scale-resolution`` as the policy parameters they spell, for every given
    policy that has them; given with a different ``--policy-param`` value is refused, and given
    where no policy has them is refused."""
    out = {p: dict(v) for p, v in params.items()}
    for flag, value in flags.items():
        if value is None:
            continue
        key, option = KNOB_FLAGS[flag], "--" + flag.replace("_", "-")
        owners = [p for p in policies if key in get_policy(p).defaults]
        if not owners:
            raise UhdProfileError(
                f"{option} sets the policy parameter {key}, which {', '.join(policies)} does not have; "
                "set this policy with --policy-param NAME=VALUE (uhd-profile list policies)"
            )
        for p in owners:
            if key in out[p] and out[p][key] != value:
                raise UhdProfileError(f"{option} {value} and --policy-param {key}={out[p][key]} disagree; give one")
            out[p][key] = value
    return out


def encodings(policies: list[str], encoding: str | None, params: dict[str, dict]) -> dict[str, list[dict]]:
    """Per policy, the parameter sets to cost, one per encoding: ``--encoding both`` (the default)
    costs every encoding of a policy that has several, and a policy with one is costed once.
    ``--encoding`` where no given policy has encodings is refused."""
    if encoding is not None and encoding not in ENCODING_CHOICES:
        raise UhdProfileError(f"--encoding {encoding!r} is not valid; valid: {', '.join(ENCODING_CHOICES)}")
    if encoding is not None and not any(get_policy(p).encodings for p in policies):
        raise UhdProfileError(
            f"--encoding applies to a policy with several encodings (minicpm-v-4.6); {', '.join(policies)} has one"
        )
    out = {}
    for p in policies:
        pol = get_policy(p)
        if not pol.encodings:
            out[p] = [params[p]]
            continue
        if "encoding" in params[p] and encoding is not None and params[p]["encoding"] != encoding:
            raise UhdProfileError(f"--encoding {encoding} and --policy-param encoding={params[p]['encoding']} disagree")
        chosen = params[p].get("encoding") or encoding or "both"
        names = pol.encodings if chosen == "both" else (chosen,)
        # the processor's own encoding (the policy's default) first, as in the tables
        out[p] = [{**params[p], "encoding": e} for e in sorted(names, key=lambda e: e != pol.defaults.get("encoding"))]
    return out


def variants_for(policies: list[str], variants: tuple[str, ...]) -> dict[str, tuple[str, ...] | None]:
    """Per policy, the variants to count: those given that the policy has (alone, every given one
    must be valid for it); None for the policy's defaults. A variant no given policy has is refused."""
    given = tuple(dict.fromkeys(variants))
    if not given:
        return dict.fromkeys(policies)
    if len(policies) == 1:
        return {policies[0]: get_policy(policies[0]).check_variants(given)}
    for v in given:
        if not any(v in get_policy(p).variants for p in policies):
            get_policy(policies[0]).check_variants((v,))
    return {p: tuple(v for v in given if v in get_policy(p).variants) or None for p in policies}


def encoder_for(policies: list[str], encoder: str | None) -> dict[str, str | None]:
    """Per policy, the tower asked for: ``encoder`` where the policy lets it be swapped (alone,
    or where no given policy does, a conflict is one line)."""
    if encoder is None:
        return dict.fromkeys(policies)
    swappable = [p for p in policies if get_policy(p).swappable_encoder]
    if len(policies) == 1 or not swappable:
        get_policy(policies[0]).tower(encoder)
    return {p: (encoder if p in swappable or len(policies) == 1 else None) for p in policies}


def policy_choices(
    policies: tuple[str, ...] | None = None,
    policy: str | None = None,
    policy_params: tuple[str, ...] = (),
    encoding: str | None = None,
    max_slices: int | None = None,
    scale_resolution: int | None = None,
    variants: tuple[str, ...] = (),
    encoder: str | None = None,
    depth: int | None = None,
    exif_transpose: bool = False,
) -> list[PolicyChoice]:
    """``item_options``' values as the ``PolicyChoice`` list to cost: one per policy and encoding,
    in the order given; --variant, --encoder and --depth apply to the policies that have them (a
    value no given policy takes is refused in one line, by ``check_item``). ``policy`` is
    ``--policy`` given once (``image``), ``policies`` repeated (``dataset``); a repeat is refused."""
    if policies is None:
        policies = (policy or DEFAULT_POLICY,)
    names = list(dict.fromkeys(policies)) or [DEFAULT_POLICY]
    if len(names) < len(policies):
        twice = next(p for p in policies if list(policies).count(p) > 1)
        raise UhdProfileError(f"--policy {twice} is given twice; give it once")
    params = with_knob_flags(
        names, policy_param_values(names, policy_params), max_slices=max_slices, scale_resolution=scale_resolution
    )
    sets = encodings(names, encoding, params)
    chosen = variants_for(names, variants)
    towers = encoder_for(names, encoder)
    # a depth no given policy takes reaches them all, so check_item says why in one line
    takes_depth = [p for p in names if "v4" in get_policy(p).check_variants(chosen[p])]
    out = [
        PolicyChoice(p, ps, chosen[p], towers[p], depth if (p in takes_depth or not takes_depth) else None)
        for p in names
        for ps in sets[p]
    ]
    for c in out:
        c.check()
    return out


def llm_settings(
    llm: str | None, prompt_tokens: int | None, decode_tokens: int | None, memory: bool = False
) -> LlmSettings | None:
    """The LLM stages to add (None without ``--llm`` or with ``--llm none``). ``--prompt-tokens``/
    ``--decode-tokens`` without an LLM to apply them to are refused (with ``--memory`` they set its
    LLM stage)."""
    if llm is None or llm.lower() == "none":
        given = [flag for flag, v in (("--prompt-tokens", prompt_tokens), ("--decode-tokens", decode_tokens)) if v is not None]
        if given and not (memory and llm is None):
            raise UhdProfileError(f"{given[0]} applies to an LLM stage; add --llm NAME (uhd-profile list llms) or --memory")
        return None
    return LlmSettings(llm, DEFAULT_PROMPT_TOKENS if prompt_tokens is None else prompt_tokens, decode_tokens or 0)


def memory_settings(policy: Policy | None, memory: bool, **given: Any) -> MemorySettings | None:
    """``options.memory_settings`` with the LLM stage resolved: ``--llm``, or the policy's family
    LLM (``Policy.llm``) when none is given, none for ``--llm none``."""
    llm = given.pop("llm", None)
    llm = (policy.llm if policy else None) if llm is None else (None if llm.lower() == "none" else llm)
    return options.memory_settings(
        memory,
        given.pop("dtype", None),
        given.pop("attn", None),
        given.pop("memory_device", None),
        llm=llm,
        prompt_tokens=given.get("prompt_tokens"),
        decode_tokens=given.get("decode_tokens"),
    )
