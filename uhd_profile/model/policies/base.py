"""The common shape of an image policy: what one image becomes before the vision tower sees it.

A policy maps an image size (width, height) in pixels to an ``ImageViews`` record: every view the
tower encodes, in encoding order, with its role, its size, its patch grid, the tokens entering the
tower and the tokens reaching the LLM, plus whatever else the LLM sees for that image (``Extra``:
newline embeddings, start/end markers, ...), kept apart from the views so they can be counted or
ignored on purpose. No pixels are touched; everything is arithmetic on sizes.

Conventions: sizes are ``(width, height)`` px, grids ``(cols, rows)``, positions ``(col, row)``
(0-based, row-major order), token counts are ints.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from uhd_profile.errors import UhdProfileError
from uhd_profile.model.encoders import get_encoder
from uhd_profile.model.slicing import check_image_size

Size = tuple[int, int]  # (width, height) in pixels
Grid = tuple[int, int]  # (cols, rows)

#: ``Extra.kind`` values: a learned vector the model inserts (e.g. LLaVA-NeXT's image newline), a
#: special token of the tokenizer (e.g. InternVL's ``<img>``), or ordinary text (e.g. ``"\n"``).
EXTRA_KINDS = ("embedding", "special", "text")
#: ``Extra.added_by`` values: the processor's placeholder expansion, or the model's chat template.
EXTRA_SOURCES = ("processor", "chat template")


@dataclass(frozen=True)
class View:
    """One input of the vision tower.

    ``role`` names what the view is (``thumbnail``, ``slice``, ``base``, ``tile``, ``image``);
    ``size`` is (width, height) px as fed to the tower; ``patches`` the patch grid (cols, rows);
    ``vit_tokens`` the tokens entering the tower (patches plus the tower's class token, if any);
    ``llm_tokens`` the visual tokens of this view that reach the LLM after the family's own
    merge/connector (and, for LLaVA-NeXT, unpadding); ``position`` is (col, row) inside the grid
    for slices and tiles, None for whole-image views.
    """

    role: str
    size: Size
    patches: Grid
    vit_tokens: int
    llm_tokens: int
    position: Grid | None = None


@dataclass(frozen=True)
class Extra:
    """Tokens the LLM sees for an image besides the views' visual tokens.

    ``name`` identifies them (e.g. ``image_newline``); ``count`` is how many per image; ``kind`` one
    of ``EXTRA_KINDS``; ``added_by`` one of ``EXTRA_SOURCES``; ``description`` says what they are
    and, for text, how the count was reckoned (a tokenizer is never loaded here).
    """

    name: str
    count: int
    kind: str
    added_by: str
    description: str


@dataclass(frozen=True)
class ImageViews:
    """What one image becomes under a policy.

    ``policy`` the policy name; ``image`` the input size (width, height) px; ``views`` every view in
    encoding order; ``grid`` (cols, rows) of slices/tiles, None when the family does not cut the
    image; ``canvas`` (width, height) px of what the image is scaled (or padded) to before it is cut
    or cropped, None when the single view is that image; ``content`` (width, height) px of the image
    inside ``canvas`` when the rest of the canvas is padding, else None; ``extras`` what else the
    LLM sees (see ``Extra``); ``params`` the parameters used (defaults filled in); ``notes`` one-line
    remarks on aspect-ratio handling.
    """

    policy: str
    image: Size
    views: tuple[View, ...]
    grid: Grid | None
    canvas: Size | None
    content: Size | None
    extras: tuple[Extra, ...]
    params: Mapping[str, Any] = field(hash=False)
    notes: tuple[str, ...] = ()

    @property
    def sizes(self) -> tuple[Size, ...]:
        """Every view's (width, height) px, in encoding order (like ``Slicing.views``)."""
        return tuple(v.size for v in self.views)

    @property
    def vit_tokens(self) -> int:
        """Tokens entering the vision tower, summed over views (class tokens included)."""
        return sum(v.vit_tokens for v in self.views)

    @property
    def view_llm_tokens(self) -> int:
        """Visual tokens reaching the LLM, summed over views (extras not included)."""
        return sum(v.llm_tokens for v in self.views)

    @property
    def extra_tokens(self) -> int:
        """All extra tokens (every ``Extra``, whoever adds it)."""
        return sum(e.count for e in self.extras)

    @property
    def llm_tokens(self) -> int:
        """Everything the LLM sees for this image: visual tokens plus every extra."""
        return self.view_llm_tokens + self.extra_tokens

    @property
    def processor_tokens(self) -> int:
        """What the family's ``transformers`` processor expands the image placeholder into: visual
        tokens plus the extras it writes itself (not those of the chat template)."""
        return self.view_llm_tokens + sum(e.count for e in self.extras if e.added_by == "processor")

    def extra(self, name: str) -> int:
        """The count of the extra called ``name`` (0 when this image has none)."""
        return sum(e.count for e in self.extras if e.name == name)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (sizes as [width, height], grids as [cols, rows]) with the totals."""

        def pair(p):
            return None if p is None else list(p)

        return {
            "policy": self.policy,
            "image": pair(self.image),
            "grid": pair(self.grid),
            "canvas": pair(self.canvas),
            "content": pair(self.content),
            "views": [
                {
                    "role": v.role,
                    "size": pair(v.size),
                    "patches": pair(v.patches),
                    "vit_tokens": v.vit_tokens,
                    "llm_tokens": v.llm_tokens,
                    "position": pair(v.position),
                }
                for v in self.views
            ],
            "extras": [
                {"name": e.name, "count": e.count, "kind": e.kind, "added_by": e.added_by, "description": e.description}
                for e in self.extras
            ],
            "params": {k: ([list(x) for x in v] if k == "grid_pinpoints" else v) for k, v in self.params.items()},
            "notes": list(self.notes),
            "vit_tokens": self.vit_tokens,
            "view_llm_tokens": self.view_llm_tokens,
            "extra_tokens": self.extra_tokens,
            "llm_tokens": self.llm_tokens,
            "processor_tokens": self.processor_tokens,
        }


@dataclass(frozen=True)
class Param:
    """One parameter of a policy: ``name``, the processor's ``default``, a one-line
    ``description`` with units, and ``parse`` turning command-line text into a value."""

    name: str
    default: Any
    description: str
    parse: Callable[[str], Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Policy:
    """An image policy of one model family.

    ``name`` the registry key; ``description`` one line; ``encoder`` the vision-tower preset in
    ``uhd_profile.model.encoders`` the views are encoded by; ``patch`` its patch size px; ``merge``
    the family's own merge/connector ratio (ViT patch tokens per LLM token: 4 for a 2x2 merge, 1 for
    a 1:1 projector); ``params`` the tunable parameters with the processor's defaults.
    ``views(width, height, **params)`` gives the ``ImageViews`` of an image.
    """

    name: str
    description: str
    encoder: str
    patch: int
    merge: int
    params: tuple[Param, ...]
    rule: Callable[..., ImageViews] = field(repr=False, compare=False)

    @property
    def defaults(self) -> dict[str, Any]:
        """Parameter name -> the processor's default."""
        return {p.name: p.default for p in self.params}

    def views(self, width: int, height: int, **params: Any) -> ImageViews:
        """The views of a ``width`` x ``height`` px image; ``params`` override the defaults.

        Bad sizes, unknown parameter names and bad values raise a one-line ``UhdProfileError``.
        """
        check_image_size(width, height)
        unknown = [k for k in params if k not in self.defaults]
        if unknown:
            valid = ", ".join(self.defaults) or "none"
            raise UhdProfileError(f"policy {self.name!r} has no parameter {unknown[0]!r}; valid parameters: {valid}")
        return self.rule(width, height, **{**self.defaults, **params})

    def parse_params(self, pairs: Mapping[str, str]) -> dict[str, Any]:
        """Command-line text values (name -> text) -> typed values, checked by name
        (one-line ``UhdProfileError`` for an unknown name or unparsable text)."""
        by_name = {p.name: p for p in self.params}
        out = {}
        for name, text in pairs.items():
            if name not in by_name:
                valid = ", ".join(by_name) or "none"
                raise UhdProfileError(f"policy {self.name!r} has no parameter {name!r}; valid parameters: {valid}")
            out[name] = by_name[name].parse(text)
        return out


# --------------------------------------------------------------------------------------------
# Shared helpers for the family modules
# --------------------------------------------------------------------------------------------


def tower(encoder: str) -> tuple[int, int]:
    """(patch px, class tokens) of an encoder preset: one source for every policy's ViT counts."""
    spec = get_encoder(encoder)
    return spec.patch, spec.prefix_tokens


def make_view(role: str, size: Size, patch: int, prefix: int, llm_tokens: int, position: Grid | None = None) -> View:
    """A ``View`` whose patch grid and ViT tokens follow from its size, the patch and class tokens."""
    cols, rows = size[0] // patch, size[1] // patch
    return View(
        role=role, size=size, patches=(cols, rows), vit_tokens=cols * rows + prefix, llm_tokens=llm_tokens, position=position
    )


def need_int(policy: str, name: str, value, low: int = 1, rule: str | None = None) -> int:
    """``value`` as an int >= ``low`` (bools refused), else a one-line UhdProfileError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UhdProfileError(f"{policy} parameter {name} {value!r} is not valid; {rule or f'it must be an integer >= {low}'}")
    return value


def need_bool(policy: str, name: str, value) -> bool:
    if not isinstance(value, bool):
        raise UhdProfileError(f"{policy} parameter {name} {value!r} is not valid; it must be true or false")
    return value


def parse_int(name: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            return int(str(text).replace("_", ""))
        except ValueError:
            raise UhdProfileError(f"parameter {name} {text!r} is not valid; it must be an integer") from None

    return parse


def parse_bool(name: str) -> Callable[[str], bool]:
    def parse(text: str) -> bool:
        t = str(text).strip().lower()
        if t in ("1", "true", "yes", "on"):
            return True
        if t in ("0", "false", "no", "off"):
            return False
        raise UhdProfileError(f"parameter {name} {text!r} is not valid; it must be true or false")

    return parse


def parse_sizes(name: str) -> Callable[[str], tuple[Size, ...]]:
    """``"672x336,336x672"`` -> ((672, 336), (336, 672)): width first, like every size here."""

    def parse(text: str) -> tuple[Size, ...]:
        out = []
        for item in str(text).split(","):
            w, sep, h = item.strip().lower().partition("x")
            if not sep or not w.isdigit() or not h.isdigit():
                raise UhdProfileError(
                    f"parameter {name} {text!r} is not valid; it must be comma-separated WxH sizes, e.g. 672x336,336x672"
                )
            out.append((int(w), int(h)))
        return tuple(out)

    return parse


__all__ = ["Size", "Grid", "View", "Extra", "ImageViews", "Param", "Policy", "EXTRA_KINDS", "EXTRA_SOURCES"]
