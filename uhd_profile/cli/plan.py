"""``uhd-profile plan``: what fits a budget (``uhd_profile.analyse.planner``).

Thin: parse, call the planner, render. User mistakes raise ``UhdProfileError`` (one line, exit 2).
"""

from __future__ import annotations

import json

import click
from rich.table import Table

from uhd_profile.analyse.cost import MemorySettings
from uhd_profile.analyse.planner import CEILING_PX, Budget, Planner, has_designs, parse_budget, parse_ratios, plan_policy
from uhd_profile.cli.console import err, out, say
from uhd_profile.cli.options import attn_option, convention_option, depth_option, dtype_option, llm_option, policy_option
from uhd_profile.cli.policy_options import policy_param_option, policy_param_values
from uhd_profile.count.conventions import get_convention
from uhd_profile.errors import UhdProfileError
from uhd_profile.model.policies import DEFAULT_POLICY, POLICIES, get_policy
from uhd_profile.units import format_bytes, parse_size


def _fmt(kind: str, value) -> str:
    if value is None:
        return "-"
    if kind == "memory":
        return format_bytes(value)
    if kind == "gflops":
        return f"{value:,.1f}"
    return f"{int(value):,}"


def _size(v) -> str:
    return "-" if v is None else f"{v[0]}x{v[1]}"


@click.command()
@policy_option(multiple=True)
@policy_param_option(several_policies=True)
@click.option("--max-memory", default=None, help="memory budget, e.g. 24GiB or 80GB: the predicted peak, every model resident")
@click.option("--max-gflops", default=None, help="compute budget: the vision stage's count / 1e9 in --convention")
@click.option("--max-llm-tokens", default=None, help="token budget: everything the LLM sees for the image")
@click.option(
    "--image", "image_size", default=None, help="WxH: what this image costs under each policy and the settings that fit"
)
@click.option(
    "--variant",
    default=None,
    help="the vision design planned for: baseline | v4 where the policy has the paper's designs "
    "[default: v4 there, else vit, the tower alone]",
)
@depth_option(default_text="6, the paper's, for the v4 variant")
@dtype_option(default="bf16", what="the dtype memory is predicted for")
@attn_option(default="sdpa", what="the attention path memory is predicted for")
@click.option("--memory-device", default="cuda", show_default=True, help="cuda | cpu: the device the memory is predicted for")
@llm_option(default=None, what="LLM preset of the memory budget's LLM stage, or none", default_text="the family's")
@click.option("--prompt-tokens", default=64, type=int, show_default=True, help="prompt tokens after the image (memory)")
@convention_option
@click.option("--ratios", default=None, help="aspect ratios W:H, comma-separated [default: 1:1,4:3,3:2,16:9,21:9,3:4,9:16]")
@click.option("--no-designs", is_flag=True, help="skip the design table (a policy with the paper's designs)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def plan(
    policies,
    policy_params,
    max_memory,
    max_gflops,
    max_llm_tokens,
    image_size,
    variant,
    depth,
    dtype,
    attn,
    memory_device,
    llm,
    prompt_tokens,
    convention,
    ratios,
    no_designs,
    as_json,
):
    """What fits a budget: for a policy, the largest image per aspect ratio, the largest setting
    of its size knob and (minicpm-v-4.6) which compressor and depth fit; with --image, what that
    image costs under each policy and which setting brings it under the budget. Every figure is a
    probe counted by the engine or traced by the memory model (docs/memory.md)."""
    budget = parse_budget(max_memory, max_gflops, max_llm_tokens)
    ratio_list = parse_ratios(ratios)
    policies = tuple(dict.fromkeys(policies))
    image = None
    if image_size is not None:
        image = parse_size(image_size, "--image")
        policies = policies or tuple(POLICIES)
    else:
        if budget is None:
            raise UhdProfileError(
                "plan needs a budget (--max-memory, --max-gflops or --max-llm-tokens), or --image WxH to cost one image"
            )
        if len(policies) > 1:
            raise UhdProfileError("give one --policy to plan for (several policies side by side need --image WxH)")
        policies = policies or (DEFAULT_POLICY,)
    params = policy_param_values(list(policies), policy_params)
    planners = []
    for p in policies:
        pol = get_policy(p)
        family_llm = pol.llm if llm is None else (None if llm.lower() == "none" else llm)
        memory = MemorySettings(dtype=dtype, attn=attn, device_kind=memory_device, llm=family_llm, prompt_tokens=prompt_tokens)
        # side by side (--image), --variant/--depth apply to the policies that have them; alone, to the one given
        alone = len(policies) == 1
        chosen = variant if alone or variant in pol.variants else None
        planners.append(
            Planner(p, budget, params[p], chosen, None, convention, memory, depth if alone or has_designs(p) else None)
        )
    with err.status("planning ...") as status:
        for pl in planners:
            pl.progress = lambda text, pl=pl: status.update(f"planning {pl.policy}: {text}")
        if image is not None:
            result = {
                "image": list(image),
                "budget": None if budget is None else {"kind": budget.kind, "limit": budget.limit},
                "policies": [{**pl.settings_dict(), **pl.image_plan(image).as_dict()} for pl in planners],
            }
        else:
            result = plan_policy(planners[0], ratio_list, designs=not no_designs)
    if as_json:
        click.echo(json.dumps(result))
        return
    if image is not None:
        _render_image(result, budget, convention)
    else:
        _render_plan(result, budget, convention)


def _render_plan(r: dict, budget: Budget, convention: str) -> None:
    kind = budget.kind
    conv = get_convention(convention)
    what = {"memory": "predicted peak", "gflops": f"{conv.giga} ({convention})", "llm_tokens": "LLM tokens"}[kind]
    m = r["memory"]
    memo = f"; memory: {m['dtype']}, {m['attn']}, for {m['device_kind']}, LLM {m['llm'] or 'none'}" if kind == "memory" else ""
    t = Table(
        title=f"{r['policy']} ({r['encoder']}, variant {r['variant']}) within {budget.text(budget.limit)}: the largest image per "
        f"aspect ratio (long side up to {CEILING_PX} px){memo}",
        title_justify="left",
    )
    for col in ("ratio", "largest image (w x h)", "pixels", what, "next step", f"{what} there"):
        t.add_column(col, justify="left" if col == "ratio" else "right")
    for row in r["ratios"]:
        if row["status"] == "any":
            largest = f"any size ({_size(row['largest'])} fits)"
        elif row["status"] == "none":
            largest = "nothing fits"
        else:
            largest = _size(row["largest"])
        pixels = f"{row['largest_pixels']:,}" if row["largest_pixels"] and row["status"] == "limit" else ""
        t.add_row(row["ratio"], largest, pixels, _fmt(kind, row["value"]), _size(row["next"]), _fmt(kind, row["next_value"]))
    out.print(t)
    if not r.get("fits_anything", True):
        smallest = r["ratios"][0]
        say(
            f"nothing fits within {budget.text(budget.limit)}: even a {_size(smallest['next'])} image needs "
            f"{_fmt(kind, smallest['next_value'])} ({what}); raise the budget"
            + (" or predict without the LLM (--llm none)" if kind == "memory" else "")
        )
    s = r.get("setting")
    if s is None:
        say(r.get("setting_note", ""))
    elif s["status"] == "ceiling":
        say(
            f"{s['name']}: every setting up to {s['high']:,} fits the {CEILING_PX} px image at every ratio "
            f"(default {s['default']})"
        )
    elif s["status"] == "none":
        say(f"{s['name']}: even {s['low']:,} does not fit at {s['binding_ratio']} ({_fmt(kind, s['next_value'])})")
    else:
        worst = max(s["values"].values())
        say(
            f"largest {s['name']} ({s['description']}) at which the {CEILING_PX} px image of every ratio fits: "
            f"{s['largest']:,} (default {s['default']:,}; worst {_fmt(kind, worst)}); {s['next']:,} gives "
            f"{_fmt(kind, s['next_value'])} at {s['binding_ratio']}"
        )
    if r.get("designs"):
        d = Table(
            title=f"the paper's designs for one {_size(r['design_image'])} image (sliced, 16x in total): "
            "the deepest insertion layer that fits",
            title_justify="left",
        )
        for col in ("design", "deepest layer index", what, "next layer", f"{what} there"):
            d.add_column(col, justify="left" if col == "design" else "right")
        for row in r["designs"]:
            if row["design"] == "baseline":
                depth = "fits" if row["status"] == "fits" else "does not fit"
            else:
                depth = {"all": f"all ({row['depth']})", "none": "none"}.get(row["status"], str(row["depth"]))
            d.add_row(
                row["design"],
                depth,
                _fmt(kind, row["value"]),
                "-" if row["next_depth"] is None else str(row["next_depth"]),
                _fmt(kind, row["next_value"]),
            )
        out.print(d)
    say(f"{r['probes']} probes in {r['seconds']:.1f} s (each: the policy's views, counted or traced as the budget needs)")


def _render_image(r: dict, budget: Budget | None, convention: str) -> None:
    conv = get_convention(convention)
    title = f"one {_size(r['image'])} image under each policy"
    if budget is not None:
        title += f" (budget: {budget.text(budget.limit)} of {budget.kind.replace('_', ' ')})"
    t = Table(title=title, title_justify="left")
    cols = (
        "policy",
        "tower, variant",
        "views",
        "ViT tokens",
        "LLM tokens",
        f"{conv.giga}",
        "memory peak",
        "fits",
        "largest setting that fits",
    )
    for col in cols:
        t.add_column(col, justify="left" if col in ("policy", "tower, variant", "largest setting that fits") else "right")
    for p in r["policies"]:
        s = p.get("setting")
        if s is None:
            setting = "-" if budget is None else "no size setting"
        elif s["status"] == "ceiling":
            setting = f"any {s['name']} (up to {s['largest']:,})"
        elif s["status"] == "none":
            setting = f"none ({s['name']} {s['next']:,} is over)"
        else:
            setting = f"{s['name']} {s['largest']:,} (default {s['default']:,})"
        fits = "-" if p["fits"] is None else ("yes" if p["fits"] else "no")
        t.add_row(
            p["policy"],
            f"{p['encoder']}, {p['variant']}",
            str(p["views"]),
            f"{p['vit_tokens']:,}",
            f"{p['llm_tokens']:,}",
            f"{p['gflops']:,.1f}",
            format_bytes(p["memory_bytes"]),
            fits,
            setting,
        )
    out.print(t)
    m = r["policies"][0]["memory"]
    llms = ", ".join(dict.fromkeys(p["memory"]["llm"] or "none" for p in r["policies"]))
    say(f"memory: the predicted peak with each family's LLM ({llms}), {m['dtype']}, {m['attn']}, for {m['device_kind']}")
