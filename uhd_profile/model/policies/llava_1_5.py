"""LLaVA-1.5: one 336 px view.

By default (as the ``transformers`` LLaVA processor does, ``do_pad`` off) the short side is scaled
to 336 px (the long side to ``int(336 x long / short)``) and the central 336 x 336 square is cut
out: the aspect ratio is kept but the ends of the long side are lost. With ``pad_to_square`` (the
processor's ``do_pad``, the original LLaVA-1.5 "pad" mode) the image is first centred on a square
of its long side, filled with the mean colour, and that square is scaled to 336 x 336: everything
is kept, letterboxed. Either way CLIP ViT-L/14-336 sees 24 x 24 patches plus its class token; the
class token is dropped and the projector maps 576 tokens 1:1 to the LLM.
"""

from __future__ import annotations

from uhd_profile.model.encoders import get_encoder
from uhd_profile.model.policies.base import ImageViews, Param, Policy, make_view, need_bool, parse_bool, tower

NAME = "llava-1.5"
ENCODER = "clip-vit-l14-336"
SIDE = get_encoder(ENCODER).image_size  # 336
MERGE = 1


def short_side_resize(width: int, height: int, short: int = SIDE) -> tuple[int, int]:
    """(width, height) after scaling the short side to ``short`` px (long side truncated)."""
    if width <= height:
        return short, int(short * height / width)
    return int(short * width / height), short


def _rule(width: int, height: int, *, pad_to_square: bool) -> ImageViews:
    need_bool(NAME, "pad_to_square", pad_to_square)
    patch, prefix = tower(ENCODER)
    view = make_view("image", (SIDE, SIDE), patch, prefix, (SIDE // patch) ** 2)
    if pad_to_square:
        side = max(width, height)
        canvas, content = (side, side), ((width, height) if width != height else None)
        note = (
            f"aspect ratio kept, nothing lost: centred on a {side}x{side} square of the mean colour, then scaled to {SIDE}x{SIDE}"
            if content
            else f"square image scaled to {SIDE}x{SIDE}"
        )
    else:
        canvas, content = short_side_resize(width, height), None
        long_side = max(canvas)
        if long_side == SIDE:
            note = f"square image scaled to {SIDE}x{SIDE}"
        else:
            axis = "width" if canvas[0] > canvas[1] else "height"
            note = (
                f"aspect ratio kept but cropped: scaled to {canvas[0]}x{canvas[1]}, then the central "
                f"{SIDE} of {long_side} px of the {axis} are kept ({SIDE / long_side:.1%}); the ends are lost"
            )
    return ImageViews(
        policy=NAME,
        image=(width, height),
        views=(view,),
        grid=None,
        canvas=canvas,
        content=content,
        extras=(),
        params={"pad_to_square": pad_to_square},
        notes=(note,),
    )


POLICY = Policy(
    name=NAME,
    description="LLaVA-1.5: one 336 px view (short side to 336 px, centre crop; or padded to a square), 576 LLM tokens",
    encoder=ENCODER,
    merge=MERGE,
    llm="llama-2-7b",  # Vicuna-7B (Llama-2-7B geometry), LLaVA-1.5-7B's LLM
    params=(
        Param(
            "pad_to_square",
            False,
            "pad to a square of the mean colour before resizing instead of centre-cropping (the processor's do_pad)",
            parse_bool("pad_to_square"),
        ),
    ),
    rule=_rule,
)
