"""Options several commands share, and turning them into a ``VariantSpec``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from uhd_profile.cli.console import note
from uhd_profile.count.conventions import CONVENTION_CHOICES, DEFAULT_CONVENTION
from uhd_profile.errors import UhdProfileError
from uhd_profile.model.encoders import DEFAULT_ENCODER
from uhd_profile.model.variants import POST_RATIOS, VariantSpec
from uhd_profile.units import parse_resolution

F = Callable[..., Any]


def encoder_option(f: F) -> F:
    return click.option(
        "--encoder", default=DEFAULT_ENCODER, show_default=True, help="encoder preset (uhd-profile list encoders)"
    )(f)


def convention_option(f: F, what: str = "the numbers shown") -> F:
    return click.option("--convention", default=DEFAULT_CONVENTION, show_default=True, help=f"{CONVENTION_CHOICES} ({what})")(f)


POST_RATIO_HELP = "post-ViT connector ratio 1|4|16 (1 = the ViT alone) [default: the design's, if the grid allows]"


def variant_options(
    f: F | None = None, *, resolution_default: str = "the encoder's native size", post_ratio_help: str = POST_RATIO_HELP
) -> Any:
    """--encoder, --resolution, --variant, --compressor, --depth, --post-ratio. Used bare
    (``@variant_options``) or with other help for the --resolution default and --post-ratio
    (``@variant_options(resolution_default=..., post_ratio_help=...)``)."""
    if f is None:
        return lambda g: variant_options(g, resolution_default=resolution_default, post_ratio_help=post_ratio_help)
    opts = [
        encoder_option,
        click.option(
            "--resolution",
            default=None,
            help=f"input view: R (square), WxH (width first) or native [default: {resolution_default}]",
        ),
        click.option(
            "--variant",
            default=None,
            help="baseline (post-ViT 16x) or v4 (window-attn-reused-mlp at depth 6 + 4x) [default: baseline]",
        ),
        click.option("--compressor", default=None, help="in-ViT compressor (uhd-profile list compressors)"),
        click.option("--depth", default=None, type=int, help="0-based encoder layer index after which the compressor runs"),
        click.option("--post-ratio", default=None, help=post_ratio_help),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def check_variant_flags(variant: str | None, compressor: str | None, depth: int | None, post_ratio: str | None) -> None:
    """The rules between --variant, --compressor, --depth and --post-ratio (one line each)."""
    if compressor is not None and variant is not None:
        raise UhdProfileError(
            f"--variant {variant} and --compressor {compressor} both given; use one (v4 = window-attn-reused-mlp at depth 6)"
        )
    if variant == "baseline" and depth is not None:
        raise UhdProfileError("--depth does not apply to --variant baseline (no in-ViT compression)")
    if compressor is not None and depth is None:
        raise UhdProfileError(f"--compressor {compressor} needs --depth K (0-based encoder layer index after which it runs)")
    if post_ratio is not None and post_ratio not in {str(r) for r in POST_RATIOS}:
        raise UhdProfileError(f"--post-ratio {post_ratio} is not valid; valid: {', '.join(map(str, POST_RATIOS))}")


def resolve_spec(
    encoder: str, resolution: str | None, variant: str | None, compressor: str | None, depth: int | None, post_ratio: str | None
) -> VariantSpec:
    """Turn CLI choices into a VariantSpec. ``post_ratio`` None means the design's ratio where the
    token grid allows it, else 1 (the ViT alone), said on stderr."""
    check_variant_flags(variant, compressor, depth, post_ratio)
    kw: dict[str, Any] = dict(encoder=encoder, resolution=parse_resolution(resolution, "--resolution"), post_ratio=1)
    if compressor is not None:
        spec = VariantSpec(compressor=compressor, depth=depth, **kw)
    else:
        spec = VariantSpec.alias(variant or "baseline", depth=depth, **kw)
    if post_ratio is not None:
        return spec.with_(post_ratio=int(post_ratio))
    design = 16 // spec.in_vit_ratio
    if spec.connector_fits(design):
        return spec.with_(post_ratio=design)
    rows, cols = spec.grid_after_vit
    note(
        f"a {design}x connector does not fit the {cols}x{rows} token grid after the ViT; counting the ViT alone "
        f"(--post-ratio 1). Pass --post-ratio, or a resolution whose grid divides, to change that."
    )
    return spec
