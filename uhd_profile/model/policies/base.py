"""The common shape of a policy: what one image (or one video) becomes before the vision tower sees it.

A policy maps an image size (width, height) in pixels to an ``ImageViews`` record: every view the
tower encodes, in encoding order, with its role, its size, its patch grid, the tokens entering the
tower (and the sequence length the tower runs on, padding included) and the tokens reaching the
LLM, plus whatever else the LLM sees for that item (``Extra``: newline embeddings, start/end
markers, timestamps, ...), kept apart from the views so they can be counted or ignored on purpose.
A video is the same record: one view per frame (or per temporal group of frames), each with its
frame indices and time, and its timestamps and wrappers as extras. No pixels are touched;
everything is arithmetic on sizes.

The token fields every result carries (docs/schema.md) are properties here, so they have one
definition: ``placeholder_tokens`` (the image/video placeholder ids the family's processor writes
into ``input_ids``: visual tokens plus learned embeddings it slots in, such as newlines),
``special_tokens`` (wrapper specials), ``text_tokens`` (ordinary text), and
``llm_tokens = placeholder_tokens + special_tokens + text_tokens``.

Conventions: sizes are ``(width, height)`` px, grids ``(cols, rows)``, positions ``(col, row)``
(0-based, row-major order), token counts are ints.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from uhd_profile.errors import UhdProfileError
from uhd_profile.model.encoders import get_encoder
from uhd_profile.model.slicing import check_image_size
from uhd_profile.units import Size

Grid = tuple[int, int]  # (cols, rows)

#: ``Extra.kind`` values: a learned vector the model inserts (e.g. LLaVA-NeXT's image newline), a
#: special token of the tokenizer (e.g. InternVL's ``<img>``), or ordinary text (e.g. ``"\n"``).
EXTRA_KINDS = ("embedding", "special", "text")
#: The token fields every image and video result carries at its top level (docs/schema.md).
TOKEN_FIELDS = ("placeholder_tokens", "special_tokens", "text_tokens", "llm_tokens", "vit_tokens", "vit_padding_tokens")
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
    for slices and tiles, None for whole-image views; ``padding`` the tokens the tower runs on
    beyond the real ones (a family that pads its input to a token budget masks them but still
    computes them), so ``seq_len`` is the sequence the tower really runs; ``frames`` the video
    frame indices the view holds (empty for an image) and ``time_s`` the time of its first frame.
    """

    role: str
    size: tuple[int, int]
    patches: Grid
    vit_tokens: int
    llm_tokens: int
    position: Grid | None = None
    padding: int = 0
    frames: tuple[int, ...] = ()
    time_s: float | None = None

    @property
    def seq_len(self) -> int:
        """The sequence length the tower runs this view on: its real tokens plus padding."""
        return self.vit_tokens + self.padding


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
    remarks on aspect-ratio handling; ``warnings`` one-line remarks a user must see (the image
    could not be encoded as the rule intends, e.g. cut to keep a cap).
    """

    policy: str
    image: tuple[int, int]
    views: tuple[View, ...]
    grid: Grid | None
    canvas: tuple[int, int] | None
    content: tuple[int, int] | None
    extras: tuple[Extra, ...]
    params: Mapping[str, Any] = field(hash=False)
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # sizes are stored as the one Size type, whatever pair a rule built them from
        for name in ("image", "canvas", "content"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Size(*value))

    @classmethod
    def tiled(
        cls,
        policy: str,
        image: tuple[int, int],
        views: Sequence[View],
        grid: Grid | None,
        canvas: tuple[int, int] | None,
        content: tuple[int, int] | None,
        extras: Sequence[Extra],
        params: Mapping[str, Any],
        notes: Sequence[str],
    ) -> ImageViews:
        """The views of an image cut into a ``grid`` of tiles or crops on a ``canvas`` (None for a
        family that did not cut this one): ``content`` is the scaled image on the canvas, kept only
        where it does not fill it (the rest is padding)."""
        kept = None if content is None or canvas is None or tuple(content) == tuple(canvas) else content
        return cls(policy, image, tuple(views), grid, canvas, kept, tuple(extras), params, tuple(notes))

    @property
    def sizes(self) -> tuple[Size, ...]:
        """Every view's (width, height) px, in encoding order (like ``Slicing.views``)."""
        return tuple(Size(*v.size) for v in self.views)

    @property
    def vit_tokens(self) -> int:
        """The sequence lengths the vision tower runs on, summed over views (class tokens and
        padding included): what its FLOPs, time and memory follow."""
        return sum(v.seq_len for v in self.views)

    @property
    def vit_padding_tokens(self) -> int:
        """How many of ``vit_tokens`` are padding (0 unless the family pads to a budget)."""
        return sum(v.padding for v in self.views)

    @property
    def view_llm_tokens(self) -> int:
        """Visual tokens reaching the LLM, summed over views (extras not included)."""
        return sum(v.llm_tokens for v in self.views)

    @property
    def extra_tokens(self) -> int:
        """All extra tokens (every ``Extra``, whoever adds it)."""
        return sum(e.count for e in self.extras)

    def _kind(self, kind: str) -> int:
        return sum(e.count for e in self.extras if e.kind == kind)

    @property
    def placeholder_tokens(self) -> int:
        """The image/video placeholder ids the processor writes into ``input_ids``: the views'
        visual tokens plus the learned embeddings it puts at placeholder positions (newlines)."""
        return self.view_llm_tokens + self._kind("embedding")

    @property
    def special_tokens(self) -> int:
        """Wrapper special tokens (``<image>``, ``<slice>``, ``<|vision_start|>``, ...)."""
        return self._kind("special")

    @property
    def text_tokens(self) -> int:
        """Ordinary text the processor or chat template adds (separators, ids, timestamps), a
        counted estimate whose rule each ``Extra`` describes (no tokenizer is loaded)."""
        return self._kind("text")

    @property
    def llm_tokens(self) -> int:
        """Everything the LLM sees for this item: ``placeholder_tokens + special_tokens + text_tokens``."""
        return self.placeholder_tokens + self.special_tokens + self.text_tokens

    @property
    def token_fields(self) -> dict[str, int]:
        """The top-level token fields of every image and video result (``TOKEN_FIELDS``, docs/schema.md)."""
        return {name: getattr(self, name) for name in TOKEN_FIELDS}

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
                    "seq_len": v.seq_len,
                    **({"frames": list(v.frames), "time_s": v.time_s} if v.frames else {}),
                }
                for v in self.views
            ],
            "extras": [
                {"name": e.name, "count": e.count, "kind": e.kind, "added_by": e.added_by, "description": e.description}
                for e in self.extras
            ],
            "params": jsonable(self.params),
            "notes": list(self.notes),
            "warnings": list(self.warnings),
            **self.token_fields,
            "view_llm_tokens": self.view_llm_tokens,
            "extra_tokens": self.extra_tokens,
            "processor_tokens": self.processor_tokens,
        }


def jsonable(params: Mapping[str, Any]) -> dict[str, Any]:
    """Policy parameters for JSON: tuples of sizes (``grid_pinpoints``) as lists of lists."""
    return {k: ([list(x) for x in v] if isinstance(v, tuple) else v) for k, v in params.items()}


@dataclass(frozen=True)
class Param:
    """One parameter of a policy: ``name``, the processor's ``default``, a one-line
    ``description`` with units, and ``parse`` turning command-line text into a value."""

    name: str
    default: Any
    description: str
    parse: Callable[[str], Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Knob:
    """A family's size setting, the one a planner searches: the policy parameter ``name``, from
    ``low`` to ``high`` in steps of ``step`` (the unit the processor works in)."""

    name: str
    low: int
    high: int
    step: int
    description: str

    def values(self) -> int:
        """How many settings the grid holds."""
        return (self.high - self.low) // self.step + 1

    def value(self, i: int) -> int:
        return self.low + i * self.step


@dataclass(frozen=True)
class Policy:
    """An image policy of one model family.

    ``name`` the registry key; ``description`` one line; ``encoder`` the vision-tower preset in
    ``uhd_profile.model.encoders`` the views are encoded by; ``patch`` its patch size px; ``merge``
    the family's own merge/connector ratio (ViT patch tokens per LLM token: 4 for a 2x2 merge, 1 for
    a 1:1 projector); ``params`` the tunable parameters with the processor's defaults.
    ``views(width, height, **params)`` gives the ``ImageViews`` of an image.

    How the views are costed is data too: ``variants`` the vision designs the views may be counted
    under (``vit``: the family's tower alone, its own merge giving the LLM tokens; ``baseline`` and
    ``v4``: the LLaVA-UHD v4 paper's designs, see ``uhd_profile.model.variants``) and
    ``default_variants`` those counted when none is asked for; ``swappable_encoder`` whether another
    tower preset may encode the views (the rule then gets ``encoder=NAME`` and aligns its views to
    that tower's patch); ``encodings`` the values of the policy's ``encoding`` parameter, when it
    has one (MiniCPM-V: ``sliced``, its processor's, and ``global``, one resized view); ``llm``
    the LLM preset (``uhd_profile.model.llms``) the family's memory and planning use by default;
    ``knob`` its size setting for the planner (None: the processor fixes the views).
    """

    name: str
    description: str
    encoder: str
    merge: int
    params: tuple[Param, ...]
    rule: Callable[..., ImageViews] = field(repr=False, compare=False)
    variants: tuple[str, ...] = ("vit",)
    default_variants: tuple[str, ...] = ("vit",)
    swappable_encoder: bool = False
    encodings: tuple[str, ...] = ()
    llm: str | None = None
    knob: Knob | None = None

    @property
    def defaults(self) -> dict[str, Any]:
        """Parameter name -> the processor's default."""
        return {p.name: p.default for p in self.params}

    @property
    def patch(self) -> int:
        """The patch size (px) of the policy's own tower."""
        return get_encoder(self.encoder).patch

    def tower(self, encoder: str | None = None) -> str:
        """The tower the views are encoded by: ``encoder`` where the policy lets it be swapped,
        else the family's own (another one is a one-line error)."""
        if encoder is None or encoder == self.encoder:
            return self.encoder
        get_encoder(encoder)
        if not self.swappable_encoder:
            raise UhdProfileError(
                f"--encoder {encoder} conflicts with --policy {self.name}, whose tower is {self.encoder}; drop --encoder "
                "(towers are swapped only under a policy that allows it, such as minicpm-v-4.6)"
            )
        return encoder

    def views(self, width: int, height: int, encoder: str | None = None, **params: Any) -> ImageViews:
        """The views of a ``width`` x ``height`` px image; ``params`` override the defaults;
        ``encoder`` swaps the tower where the policy allows it (``tower``).

        Bad sizes, unknown parameter names and bad values raise a one-line ``UhdProfileError``.
        """
        check_image_size(width, height)
        unknown = [k for k in params if k not in self.defaults]
        if unknown:
            valid = ", ".join(self.defaults) or "none"
            raise UhdProfileError(f"policy {self.name!r} has no parameter {unknown[0]!r}; valid parameters: {valid}")
        tower = self.tower(encoder)
        extra = {"encoder": tower} if self.swappable_encoder else {}
        return self.rule(width, height, **extra, **{**self.defaults, **params})

    def check_variants(self, variants: tuple[str, ...] | None) -> tuple[str, ...]:
        """The variants to count (``default_variants`` when none), repeats dropped; one the
        policy cannot be counted under is a one-line error naming the valid ones."""
        chosen = tuple(dict.fromkeys(variants or self.default_variants))
        for v in chosen:
            if v not in self.variants:
                raise UhdProfileError(
                    f"--variant {v!r} is not valid for policy {self.name}; valid: {', '.join(self.variants)}"
                    + ("" if "v4" in self.variants else " (the paper's baseline and v4 fit the minicpm-v-4.6 policy)")
                )
        return chosen

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


def make_view(
    role: str, size: tuple[int, int], patch: int, prefix: int, llm_tokens: int, position: Grid | None = None, **more: Any
) -> View:
    """A ``View`` whose patch grid and ViT tokens follow from its size, the patch and class tokens
    (``more``: ``padding``, ``frames``, ``time_s``)."""
    cols, rows = size[0] // patch, size[1] // patch
    return View(
        role=role,
        size=Size(*size),
        patches=(cols, rows),
        vit_tokens=cols * rows + prefix,
        llm_tokens=llm_tokens,
        position=position,
        **more,
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
            out.append(Size(int(w), int(h)))
        return tuple(out)

    return parse


__all__ = [
    "Size",
    "Grid",
    "jsonable",
    "Knob",
    "TOKEN_FIELDS",
    "View",
    "Extra",
    "ImageViews",
    "Param",
    "Policy",
    "EXTRA_KINDS",
    "EXTRA_SOURCES",
]
