"""The options several commands share, each defined once (name, help, default, validity rule).

Every decorator here is used either bare or called with what differs between commands::

    @encoder_option                                # --encoder, default: the paper's tower
    @encoder_option(default=None, default_text="the policy's own")
    @dtype_option                                  # --dtype for a measurement: fp32, auto allowed
    @dtype_option(default=None, what="with --memory: the dtype predicted for", default_text="bf16")

Only the default, the sentence saying what the value is for (``what``) and, where the default is
None, the text shown for it (``default_text``) change between commands; the flag, its parser and
its validity rule (``check_dtype``, ``check_attn``, ``check_llm``, ``check_policy``) live here
once. Checks raise one-line ``UhdProfileError``s that name the flag, the value and what is valid.

``variant_options`` adds the six flags that pick a variant and hands the command one
``VariantFlags`` object (``flags.spec()``: the ``VariantSpec``), so no command repeats them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from uhd_profile.analyse.cost import MemorySettings
from uhd_profile.cli.console import note
from uhd_profile.count.conventions import CONVENTION_CHOICES, DEFAULT_CONVENTION
from uhd_profile.errors import UhdProfileError
from uhd_profile.model.encoders import DEFAULT_ENCODER
from uhd_profile.model.llms import ATTN_BACKENDS, DEFAULT_LLM, get_llm
from uhd_profile.model.policies import DEFAULT_POLICY, POLICIES, get_policy
from uhd_profile.model.variants import POST_RATIOS, VariantSpec
from uhd_profile.units import AUTO_DTYPE, DTYPES, parse_dtype, parse_resolution

F = Callable[..., Any]


def _bare_or_called(factory: Callable[..., Callable[[F], F]]) -> Any:
    """Let ``@x_option`` stand for ``@x_option()``: the decorator works bare or with keywords."""

    @functools.wraps(factory)
    def decorator(f: F | None = None, **kw: Any) -> Any:
        if f is None:
            return factory(**kw)
        return factory(**kw)(f)

    return decorator


def _shown(help_text: str, default: Any, default_text: str | None) -> dict[str, Any]:
    """click keywords for a help text with its default: ``[default: X]`` from click, or from
    ``default_text`` where the default is None (decided later, e.g. by a policy)."""
    if default is None and default_text is not None:
        return {"help": f"{help_text} [default: {default_text}]"}
    return {"help": help_text, "show_default": default is not None}


# --------------------------------------------------------------------------------------------
# --encoder, --convention, --depth
# --------------------------------------------------------------------------------------------


@_bare_or_called
def encoder_option(default: str | None = DEFAULT_ENCODER, default_text: str | None = None) -> Callable[[F], F]:
    """``--encoder NAME``: an encoder preset (``uhd-profile list encoders``). ``default`` None lets
    the command pick (say which in ``default_text``, e.g. "the policy's own")."""
    return click.option(
        "--encoder", default=default, **_shown("encoder preset (uhd-profile list encoders)", default, default_text)
    )


def convention_option(f: F | None = None, what: str = "the numbers shown") -> Any:
    """``--convention NAME``: the counting convention of ``what`` (bare or ``convention_option(what=...)``)."""
    if f is None:
        return lambda g: convention_option(g, what)
    return click.option("--convention", default=DEFAULT_CONVENTION, show_default=True, help=f"{CONVENTION_CHOICES} ({what})")(f)


DEPTH_HELP = "0-based encoder layer index after which the in-ViT compressor runs"


@_bare_or_called
def depth_option(default_text: str | None = None) -> Callable[[F], F]:
    """``--depth K`` (an int, default None: the command's, said in ``default_text``, e.g. "6, the
    paper's"). Its range depends on the encoder: ``VariantSpec`` checks it."""
    return click.option("--depth", default=None, type=int, **_shown(DEPTH_HELP, None, default_text))


# --------------------------------------------------------------------------------------------
# --dtype, --attn
# --------------------------------------------------------------------------------------------

DTYPE_TEXT = f"{' | '.join(DTYPES)} (or float32, bfloat16, float16, half)"


def check_dtype(value: Any, flag: str = "--dtype", auto: bool = False) -> str:
    """``value`` canonical (fp32 | bf16 | fp16; ``auto`` too where ``auto``), else a one-line error."""
    return parse_dtype(value, flag, auto=auto)


@_bare_or_called
def dtype_option(
    default: str | None = "fp32",
    what: str = "the dtype the model runs in",
    default_text: str | None = None,
    auto: bool = False,
    flag: str = "--dtype",
) -> Callable[[F], F]:
    """``--dtype NAME``: ``what`` the dtype is for. ``auto=True`` offers ``auto`` (the faster on the
    device, ``uhd_profile.measure.dtypes``); ``flag`` another name for a second dtype (``--kv-dtype``).
    The value reaches the command as typed: check it with ``check_dtype(value, flag, auto)``."""
    choices = DTYPE_TEXT + (f", or {AUTO_DTYPE} (the faster on the device)" if auto else "")
    return click.option(flag, default=default, **_shown(f"{what}: {choices}", default, default_text))


def check_attn(value: str, flag: str = "--attn") -> str:
    """``value`` if it is an attention backend (sdpa | eager), else a one-line error."""
    if value not in ATTN_BACKENDS:
        raise UhdProfileError(f"{flag} {value!r} is not valid; valid: {', '.join(ATTN_BACKENDS)}")
    return value


@_bare_or_called
def attn_option(
    default: str | None = "sdpa", what: str = "attention backend", default_text: str | None = None
) -> Callable[[F], F]:
    """``--attn NAME``: sdpa | eager (eager materialises the scores); check with ``check_attn``."""
    text = f"{what}: {' | '.join(ATTN_BACKENDS)} (eager materialises the attention scores)"
    return click.option("--attn", default=default, **_shown(text, default, default_text))


# --------------------------------------------------------------------------------------------
# --llm, --policy
# --------------------------------------------------------------------------------------------

NO_LLM = "none"


def check_llm(value: str | None, allow_none: bool = False) -> str | None:
    """An LLM preset name (None for ``none`` where ``allow_none``), else a one-line error."""
    if value is None or (allow_none and value.lower() == NO_LLM):
        return None
    get_llm(value)
    return value


@_bare_or_called
def llm_option(
    default: str | None = DEFAULT_LLM, what: str = "LLM preset (uhd-profile list llms)", default_text: str | None = None
) -> Callable[[F], F]:
    """``--llm NAME``: ``what`` the LLM is for; ``default`` None with ``default_text`` for a
    command that decides (e.g. "the family's"); check with ``check_llm``."""
    return click.option("--llm", default=default, **_shown(what, default, default_text))


def check_policy(value: str | None) -> str:
    """A policy name (None: the default policy), else a one-line error."""
    if value is None:
        return DEFAULT_POLICY
    get_policy(value)
    return value


@_bare_or_called
def policy_option(multiple: bool = False, what: str | None = None) -> Callable[[F], F]:
    """``--policy NAME`` (default None: ``DEFAULT_POLICY``); ``multiple=True``: repeatable, passed as
    ``policies`` (a tuple). Check each with ``check_policy``."""
    base = what or f"image policy: {' | '.join(POLICIES)}"
    if multiple:
        return click.option("--policy", "policies", multiple=True, help=f"{base}; repeat for several [default: {DEFAULT_POLICY}]")
    return click.option("--policy", default=None, help=f"{base} [default: {DEFAULT_POLICY}]")


# --------------------------------------------------------------------------------------------
# --memory and its settings
# --------------------------------------------------------------------------------------------


def memory_options(what: str) -> Callable[[F], F]:
    """``--memory`` (predict the memory ``what``) with ``--dtype``, ``--attn`` and ``--memory-device``
    for it (all None unless given: ``memory_settings`` fills the defaults and refuses them alone)."""
    opts = [
        click.option("--memory", is_flag=True, help=f"also predict the memory {what} (docs/memory.md)"),
        dtype_option(default=None, what="with --memory: the dtype predicted for", default_text="bf16"),
        attn_option(default=None, what="with --memory: the attention path", default_text="sdpa"),
        click.option("--memory-device", default=None, help="with --memory: cuda | cpu, the device predicted for [default: cuda]"),
    ]

    def add(f: F) -> F:
        for o in reversed(opts):
            f = o(f)
        return f

    return add


def memory_settings(
    memory: bool, dtype: str | None, attn: str | None, memory_device: str | None, **llm: Any
) -> MemorySettings | None:
    """The ``MemorySettings`` of ``memory_options``' flags (None without --memory, where any of its
    settings alone is refused in one line); ``llm``: the LLM stage (``llm``, ``prompt_tokens``,
    ``decode_tokens``)."""
    if not memory:
        for flag, value in (("--dtype", dtype), ("--attn", attn), ("--memory-device", memory_device)):
            if value is not None:
                raise UhdProfileError(f"{flag} applies to the memory prediction; add --memory")
        return None
    return MemorySettings(
        dtype=check_dtype(dtype or "bf16"),
        attn=check_attn(attn or "sdpa"),
        device_kind=memory_device or "cuda",
        **{k: v for k, v in llm.items() if v is not None},
    )


# --------------------------------------------------------------------------------------------
# The variant: --encoder, --resolution, --variant, --compressor, --depth, --post-ratio
# --------------------------------------------------------------------------------------------

POST_RATIO_HELP = (
    "post-ViT connector ratio 1|4|16 (1 = the ViT alone) [default: the tower family's (16 for the paper's "
    "towers, 4 for Qwen2.5-VL and InternViT, 1 for LLaVA's CLIP and SigLIP), if the grid allows]"
)


@dataclass(frozen=True)
class VariantFlags:
    """The six flags of ``variant_options`` as given (None: not given)."""

    encoder: str
    resolution: str | None = None
    variant: str | None = None
    compressor: str | None = None
    depth: int | None = None
    post_ratio: str | None = None

    def check(self) -> None:
        """The rules between --variant, --compressor, --depth and --post-ratio (one line each)."""
        variant, compressor, depth, post_ratio = self.variant, self.compressor, self.depth, self.post_ratio
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

    @property
    def ratio(self) -> int | None:
        """--post-ratio as an int (None: not given)."""
        return None if self.post_ratio is None else int(self.post_ratio)

    def base_spec(self, **kw: Any) -> VariantSpec:
        """The checked flags as a spec at post-ratio 1 (the ViT alone); ``kw`` replaces fields
        (``resolution``, ``encoding``, ...): the caller picks the connector."""
        self.check()
        kw = {"encoder": self.encoder, "post_ratio": 1, **kw}
        kw.setdefault("resolution", parse_resolution(self.resolution, "--resolution"))
        if self.compressor is not None:
            return VariantSpec(compressor=self.compressor, depth=self.depth, **kw)
        return VariantSpec.alias(self.variant or "baseline", depth=self.depth, **kw)

    def spec(self) -> VariantSpec:
        """The ``VariantSpec``. Without --post-ratio: the tower's design ratio (``design_ratio``)
        where the token grid allows it, else 1 (the ViT alone), said on stderr."""
        spec = self.base_spec()
        if self.ratio is not None:
            return spec.with_(post_ratio=self.ratio)
        design = spec.design_ratio
        if spec.connector_fits(design):
            return spec.with_(post_ratio=design)
        rows, cols = spec.grid_after_vit
        note(
            f"a {design}x connector does not fit the {cols}x{rows} token grid (width x height) after the ViT; counting "
            f"the ViT alone (--post-ratio 1). Pass --post-ratio, or a resolution whose grid divides "
            f"({spec._fix(spec.size, design)}), to change that."
        )
        return spec


VARIANT_FLAGS = ("encoder", "resolution", "variant", "compressor", "depth", "post_ratio")


def variant_options(
    f: F | None = None, *, resolution_default: str = "the encoder's native size", post_ratio_help: str = POST_RATIO_HELP
) -> Any:
    """--encoder, --resolution, --variant, --compressor, --depth, --post-ratio, handed to the
    command as one ``flags: VariantFlags`` argument. Used bare (``@variant_options``) or with other
    help for the --resolution default and --post-ratio (``@variant_options(resolution_default=...)``)."""
    if f is None:
        return lambda g: variant_options(g, resolution_default=resolution_default, post_ratio_help=post_ratio_help)

    @functools.wraps(f)
    def command(**kw: Any) -> Any:
        flags = VariantFlags(**{k: kw.pop(k) for k in VARIANT_FLAGS})
        return f(flags=flags, **kw)

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
            help="baseline (post-ViT compression only) or v4 (window-attn-reused-mlp at depth 6, then the rest) "
            "[default: baseline]",
        ),
        click.option("--compressor", default=None, help="in-ViT compressor (uhd-profile list compressors)"),
        depth_option,
        click.option("--post-ratio", default=None, help=post_ratio_help),
    ]
    g: F = command
    for o in reversed(opts):
        g = o(g)
    return g
