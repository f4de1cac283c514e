"""``uhd-profile image``: what images cost under a policy (``uhd_profile.analyse.cost``).

Thin: parse, call ``cost_item``, render. User mistakes raise ``UhdProfileError`` (one line, exit 2,
printed by ``cli.main``).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import click

from uhd_profile.analyse.images import draw_views
from uhd_profile.cli.console import err, warn
from uhd_profile.cli.options import convention_option, memory_options
from uhd_profile.cli.policy_options import item_options, llm_options, llm_settings, memory_settings, policy_choices, target
from uhd_profile.cli.render import memory_entries, print_item, print_llm, print_memory
from uhd_profile.errors import UhdProfileError
from uhd_profile.files import atomic_write_bytes, check_output_file
from uhd_profile.model.policies import get_policy


def _draw(draw_path: str, drawn: list, exif_transpose: bool) -> None:
    """Each image file with its policy's views (several images: -<name> before the suffix)."""
    base = Path(draw_path)
    seen: dict[str, int] = {}
    for path, views in drawn:
        dest = base
        if len(drawn) > 1:
            stem = Path(path).stem
            seen[stem] = seen.get(stem, 0) + 1
            tag = stem if seen[stem] == 1 else f"{stem}-{seen[stem]}"
            dest = base.with_name(f"{base.stem}-{tag}{base.suffix or '.png'}")
        try:
            png = io.BytesIO()
            draw_views(path, views, exif_transpose=exif_transpose).save(png, format="PNG")
        except OSError as exc:
            raise UhdProfileError(f"--draw: could not draw {path}: {str(exc).splitlines()[0]}") from None
        atomic_write_bytes(dest, png.getvalue(), "--draw")  # whole or not at all
        err.print(f"wrote {dest}", markup=False, highlight=False)


@click.command()
@click.argument("paths", nargs=-1, required=True)
@item_options(several_policies=False)
@convention_option
@click.option("--json", "as_json", is_flag=True, help="print a JSON list, one object per image and encoding")
@click.option(
    "--draw",
    "draw_path",
    default=None,
    help="write the image with its policy's grid and whole-image view to this PNG "
    "(several images: -<image name> is added before the suffix)",
)
@memory_options("per view and stage")
@llm_options
def image(paths, convention, as_json, draw_path, memory, dtype, attn, memory_device, llm, prompt_tokens, decode_tokens, **item):
    """Views, tokens and FLOPs of each image (PATH: an image file, or a size WxH) under an image
    policy (default minicpm-v-4.6, encoded sliced, thumbnail + grid of slices, and globally, one
    resized view, under the paper's baseline and v4); --llm adds the LLM stages, --memory the
    predicted memory per stage."""
    choices = policy_choices(**item)
    mem = memory_settings(
        get_policy(choices[0].policy),
        memory,
        dtype=dtype,
        attn=attn,
        memory_device=memory_device,
        llm=llm,
        prompt_tokens=prompt_tokens,
        decode_tokens=decode_tokens,
    )
    stages = llm_settings(llm, prompt_tokens, decode_tokens, memory)
    if draw_path is not None:
        check_output_file(draw_path, "--draw")
    exif_transpose = item["exif_transpose"]
    targets = [target(p, exif_transpose) for p in paths]
    if draw_path is not None:
        sizes_only = [str(size) for p, size in targets if p is None]
        if sizes_only:
            raise UhdProfileError(f"--draw needs image files, but {sizes_only[0]} is a size; give the image's path")
    results = [[c.cost(w, h, p, stages, mem) for c in choices] for p, (w, h) in targets]
    for line in dict.fromkeys(w for costs in results for c in costs for w in c.views.warnings):
        warn(line)
    if draw_path is not None:
        _draw(draw_path, [(c[0].path, c[0].views) for c in results], exif_transpose)
    if as_json:
        click.echo(json.dumps([c.to_dict(convention) for costs in results for c in costs]))
        return
    for costs in results:
        print_item(costs, convention)
        if mem is not None:
            print_memory(memory_entries(costs), mem)
        if stages is not None:
            print_llm(costs, stages, convention)
