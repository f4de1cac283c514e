"""Recipes: a TOML grid of variants x settings, expanded into points and validated before anything runs.

A recipe file::

    [recipe]
    name = "paper"                 # defaults to the file's stem
    description = "..."

    [defaults]                     # every [[grid]] starts from these (all optional)
    encoders = ["siglip2-so400m-p14"]
    resolutions = [980]            # an int (square), "WxH" (width first), {width = W, height = H} or "native"
    encodings = ["view"]           # "view" (one view), or "global"/"sliced": the resolution is then a
                                   # whole image (any size), turned into views by uhd_profile.model.slicing
    compressors = ["none"]         # "none" = post-ViT compression only, or in-ViT design names
    depths = [6]                   # encoder layer index after which the compressor runs, or "all"
    post_ratios = ["auto"]         # 1, 4, 16 or "auto" (the design's own: 16 without, 4 with an in-ViT compressor)
    dtypes = ["fp32"]              # fp32, bf16, fp16, or "auto": what is fast on the sweep's device
                                   # (uhd_profile.measure.roofline.choose_dtype), resolved once per run
    batches = [1]
    measure = ["flops"]            # any of flops, latency, memory, energy (flops always included)
    llms = ["none"]                # LLM presets: each point then runs the whole pipeline (vision ->
                                   # connector -> LLM prefill -> decode; uhd_profile.model.pipeline)
    prompt_tokens = [64]           # text tokens after the image (points with an LLM)
    decode_tokens = [0]            # generated tokens after the first (points with an LLM)
    llm_drops = ["none"]           # in-LLM dropping: "fastv:K:R", "pyramid-drop:K1,K2:RATIO", ...

    [timing]                       # measurement settings (uhd_profile.measure.timing.TimingSettings fields)
    min_samples = 5

    [[grid]]                       # one block of the grid: the cross product of its lists
    name = "designs"
    compressors = ["avg-pool", "window-attn-reused-mlp"]
    when = "any"                   # "cpu" / "cuda": only when the sweep runs on that kind of device

    [when.cpu.timing]              # device-specific overrides of [defaults] and [timing]
    max_time_s = 10

Every point is the cross product of a grid block's lists; a point's ``point_id`` is a hash of
everything that defines it, and the recipe's ``hash`` one of its full point set (so a resumed or
merged run can tell whether it holds the same recipe).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from uhd_profile.errors import UhdProfileError
from uhd_profile.measure.devices import resolve_device
from uhd_profile.measure.dtypes import AUTO_DTYPE, DtypeChoice, choose_dtype
from uhd_profile.measure.pipeline import check_measurable
from uhd_profile.measure.schema import MEASURES, Point
from uhd_profile.measure.timing import TimingSettings
from uhd_profile.model.compressors import COMPRESSORS
from uhd_profile.model.encoders import DEFAULT_ENCODER, ENCODERS
from uhd_profile.model.llms import LLMS
from uhd_profile.model.pipeline import DEFAULT_DECODE_TOKENS, DEFAULT_PROMPT_TOKENS, DROP_FORMS, PipelineSpec, parse_drop
from uhd_profile.model.variants import ENCODINGS, LLM_HIDDEN, POST_RATIOS, VariantSpec
from uhd_profile.units import DTYPES, parse_dtype, parse_resolution

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

WHEN = ("any", "cpu", "cuda")
MAX_POINTS = 100_000
"""The most points a recipe may expand to: counted before anything is expanded, a bigger grid is
refused in one line (a sweep point costs at least ~0.1 s, so 10^5 points is already a day of work)."""
PROGRESS_ABOVE = 10_000
"""Recipes with more points than this report their expansion's progress (``load_recipe(progress=)``)."""
RECIPES_DIR = Path(__file__).parent.parent / "recipes"

#: keys of a [[grid]] block (and of [defaults]) with their defaults
GRID_DEFAULTS: dict[str, Any] = {
    "encoders": [DEFAULT_ENCODER],
    "resolutions": ["native"],
    "encodings": ["view"],
    "compressors": ["none"],
    "depths": [6],
    "post_ratios": ["auto"],
    "llm_hidden": LLM_HIDDEN,
    "dtypes": ["fp32"],
    "batches": [1],
    "measure": ["flops"],
    # points with an LLM (additive: a recipe without llms expands to the same points and ids)
    "llms": ["none"],
    "prompt_tokens": [DEFAULT_PROMPT_TOKENS],
    "decode_tokens": [DEFAULT_DECODE_TOKENS],
    "llm_drops": ["none"],
}
GRID_ONLY_KEYS = ("name", "when")
#: keys an older uhd-profile read, by the key that replaced them (refused in one line naming it)
RENAMED_KEYS = {"llm_plans": "llm_drops"}
TOP_KEYS = ("recipe", "defaults", "timing", "grid", "when")
TIMING_FIELDS = tuple(f.name for f in fields(TimingSettings))


@dataclass
class Recipe:
    name: str
    path: str
    description: str
    hash: str  # of the expanded point set (sha256, 16 hex digits)
    text: str  # the file as written (copied into the run directory)
    points: list[Point]
    device: str  # the device kind the recipe was expanded for: cpu or cuda
    dtype_choice: DtypeChoice | None = None  # what dtype "auto" resolved to (None: the recipe has no auto)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def shipped_recipes() -> dict[str, Path]:
    """Recipes that ship with the package: name -> path."""
    return {p.stem: p for p in sorted(RECIPES_DIR.glob("*.toml"))}


def _find(path_or_name: str) -> Path:
    p = Path(path_or_name)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise UhdProfileError(f"recipe {path_or_name!r}: no such file; shipped recipes: {', '.join(shipped_recipes())}")
        return p
    shipped = shipped_recipes()
    if path_or_name not in shipped:
        raise UhdProfileError(f"recipe {path_or_name!r} is neither a file nor a shipped recipe; shipped: {', '.join(shipped)}")
    return shipped[path_or_name]


class _Where:
    """Builds 'file: key: problem; valid: ...' errors."""

    def __init__(self, path: Path):
        self.path = path

    def error(self, key: str, problem: str, valid: str | None = None) -> UhdProfileError:
        msg = f"{self.path}: {key}: {problem}"
        return UhdProfileError(msg + (f"; valid: {valid}" if valid else ""))


def _check_keys(where: _Where, table: Any, allowed, key: str) -> None:
    if not isinstance(table, dict):
        raise where.error(key, f"must be a table, got {type(table).__name__}")
    for k in table:
        if k in RENAMED_KEYS and RENAMED_KEYS[k] in allowed:
            raise where.error(f"{key}.{k}" if key else k, f"was renamed; write {RENAMED_KEYS[k]} = [...] instead")
        if k not in allowed:
            raise where.error(f"{key}.{k}" if key else k, "unknown key", ", ".join(allowed))


def _as_list(where: _Where, key: str, value: Any) -> list:
    """A grid key's list. A bare value is refused (``encoders = "tiny"`` would otherwise read as a
    list of one by luck, and ``resolutions = 448`` as well), except ``depths = "all"``."""
    if isinstance(value, list):
        if not value:
            raise where.error(key, "is an empty list, so the grid is empty")
        return value
    name = key.rsplit(".", 1)[-1]
    if name == "depths" and value == "all":
        return [value]
    example = json.dumps(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else "..."
    raise where.error(
        key,
        f"{value!r} is {'an' if type(value).__name__[0] in 'aeiou' else 'a'} {type(value).__name__}, not a list",
        f"a list, e.g. {name} = [{example}]",
    )


def _device_kind(device: str) -> str:
    return resolve_device(device).type


def load_recipe(
    path_or_name: str = "paper",
    device: str = "auto",
    progress: Callable[[int, int], None] | None = None,
    max_points: int | None = MAX_POINTS,
    dtype_choice: DtypeChoice | None = None,
) -> Recipe:
    """Read, validate and expand a recipe for ``device`` (``auto``/``cpu``/``cuda[:N]``).

    Raises ``UhdProfileError`` naming the file, the key and what is valid on any mistake, and for a
    grid of more than ``max_points`` points (counted before expanding; None: no cap). ``progress(done,
    total)`` is called as the points are expanded when there are more than ``PROGRESS_ABOVE``.
    """
    path = _find(path_or_name)
    where = _Where(path)
    text = path.read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UhdProfileError(f"{path}: not valid TOML: {exc}") from None
    _check_keys(where, data, TOP_KEYS, "")
    kind = _device_kind(device)
    concrete = device if device not in ("auto",) else ("cuda" if kind == "cuda" else "cpu")

    meta = data.get("recipe", {})
    _check_keys(where, meta, ("name", "description"), "recipe")
    name = meta.get("name", path.stem)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise where.error("recipe.name", f"{name!r} is not a valid name", "letters, digits, '.', '_', '-'")
    description = meta.get("description", "")

    defaults = dict(GRID_DEFAULTS)
    timing: dict = {}
    tfields = TIMING_FIELDS
    layers = [(data, "")]
    when = data.get("when", {})
    _check_keys(where, when, ("cpu", "cuda"), "when")
    for k, sub in when.items():
        _check_keys(where, sub, ("defaults", "timing"), f"when.{k}")
    if kind in when:
        layers.append((when[kind], f"when.{kind}."))
    for table, prefix in layers:
        d = table.get("defaults", {})
        _check_keys(where, d, tuple(GRID_DEFAULTS), f"{prefix}defaults")
        for k, v in d.items():
            if k != "llm_hidden":
                _as_list(where, f"{prefix}defaults.{k}", v)  # named where it was written, not in the grid
        defaults.update(d)
        t = table.get("timing", {})
        _check_keys(where, t, tfields, f"{prefix}timing")
        timing.update(t)
    try:
        TimingSettings(**timing)
    except UhdProfileError as exc:
        raise where.error("timing", str(exc)) from None
    except TypeError as exc:
        raise where.error("timing", str(exc), ", ".join(tfields)) from None

    if "defaults" not in data and "grid" not in data:
        raise UhdProfileError(
            f"{path}: {'is empty' if not text.strip() else 'has no [defaults] and no [[grid]]'}; a recipe says what to "
            f"run in a [defaults] table and/or [[grid]] blocks (it would otherwise run the built-in defaults: "
            f"{DEFAULT_ENCODER} at its native size); see `uhd-profile list recipes` and recipes/smoke.toml"
        )
    grids = data.get("grid")
    if grids is None:
        grids = [{}]
    if not isinstance(grids, list):
        raise where.error("grid", "must be an array of tables ([[grid]])")
    blocks: list[tuple[str, dict, dict]] = []
    for gi, g in enumerate(grids):
        gkey = f"grid[{gi}]" + (f" ({g['name']})" if isinstance(g, dict) and "name" in g else "")
        _check_keys(where, g, (*GRID_ONLY_KEYS, *GRID_DEFAULTS), gkey)
        w = g.get("when", "any")
        if w not in WHEN:
            raise where.error(f"{gkey}.when", f"{w!r} is not valid", ", ".join(WHEN))
        if w != "any" and w != kind:
            continue
        block = {**defaults, **{k: v for k, v in g.items() if k not in GRID_ONLY_KEYS}}
        blocks.append((gkey, block, _lists(where, gkey, block)))
    total = sum(_count(lists) for _, _, lists in blocks)
    if max_points is not None and total > max_points:
        raise where.error(
            "grid",
            f"expands to {total:,} points, more than the {max_points:,} a recipe may hold",
            "split it into several recipes (one run directory each), or narrow its lists",
        )
    if any(AUTO_DTYPE in lists["dtypes"] for _, _, lists in blocks) and dtype_choice is None:
        dtype_choice = choose_dtype(concrete)
    if not any(AUTO_DTYPE in lists["dtypes"] for _, _, lists in blocks):
        dtype_choice = None
    tick = progress if progress is not None and total > PROGRESS_ABOVE else None
    points: list[Point] = []
    seen: dict[str, str] = {}
    for gkey, block, lists in blocks:
        for p in _expand(where, gkey, block, lists, timing, concrete, dtype_choice):
            pid = p.point_id
            if pid in seen:
                raise where.error(
                    gkey,
                    f"duplicate point {p.spec.id} ({'+'.join(p.measure)}, {p.dtype}, batch {p.batch}), already in {seen[pid]}",
                    "each point once across all [[grid]] blocks",
                )
            seen[pid] = gkey
            points.append(p)
            if tick is not None and len(points) % 2000 == 0:
                tick(len(points), total)
    if tick is not None:
        tick(len(points), total)
    if not points:
        raise where.error(
            "grid", f"expands to no points on a {kind} device", "at least one [[grid]] block for 'any' or that device"
        )
    digest = hashlib.sha256("\n".join(sorted(seen)).encode()).hexdigest()[:16]
    return Recipe(name, str(path), description, digest, text, points, kind, dtype_choice)


def _resolution(where: _Where, key: str, r: Any) -> Any:
    """A recipe resolution: an int (square), "WxH" (width first), {width = W, height = H} or
    "native"; a bare [a, b] list is refused (it cannot say which side is the width)."""
    try:
        return parse_resolution(r, what="resolution")
    except UhdProfileError as exc:
        raise where.error(key, str(exc)) from None


def _lists(where: _Where, gkey: str, block: dict) -> dict[str, list]:
    """A block's validated lists (cheap: no point is built yet)."""
    lists = {k: _as_list(where, f"{gkey}.{k}", block[k]) for k in GRID_DEFAULTS if k not in ("measure", "llm_hidden")}
    for enc in lists["encoders"]:
        if enc not in ENCODERS:
            raise where.error(f"{gkey}.encoders", f"unknown encoder {enc!r}", ", ".join(ENCODERS))
    for c in lists["compressors"]:
        if c != "none" and c not in COMPRESSORS:
            raise where.error(f"{gkey}.compressors", f"unknown compressor {c!r}", "none, " + ", ".join(COMPRESSORS))
    for pr in lists["post_ratios"]:
        if pr != "auto" and (isinstance(pr, bool) or pr not in POST_RATIOS):
            raise where.error(f"{gkey}.post_ratios", f"{pr!r} is not valid", "auto, " + ", ".join(map(str, POST_RATIOS)))
    canonical = []
    for dt in lists["dtypes"]:
        if dt == AUTO_DTYPE:
            canonical.append(AUTO_DTYPE)
            continue
        try:
            canonical.append(parse_dtype(dt))
        except UhdProfileError:
            raise where.error(
                f"{gkey}.dtypes",
                f"{dt!r} is not valid",
                ", ".join(DTYPES) + f" (or float32, bfloat16, float16), or {AUTO_DTYPE} (the faster on the device)",
            ) from None
    lists["dtypes"] = canonical
    for b in lists["batches"]:
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise where.error(f"{gkey}.batches", f"{b!r} is not valid", "integers >= 1")
    for e in lists["encodings"]:
        if e not in ENCODINGS:
            raise where.error(f"{gkey}.encodings", f"{e!r} is not valid", ", ".join(ENCODINGS))
    if lists["depths"] != ["all"]:
        for d in lists["depths"]:
            if isinstance(d, bool) or not isinstance(d, int):
                raise where.error(f"{gkey}.depths", f"{d!r} is not a depth", 'integers (encoder layer indices) or "all"')
    measure = _as_list(where, f"{gkey}.measure", block["measure"])
    for m in measure:
        if m not in MEASURES:
            raise where.error(f"{gkey}.measure", f"{m!r} is not valid", ", ".join(MEASURES))
    lists["measure"] = measure
    llm_hidden = block["llm_hidden"]
    if isinstance(llm_hidden, bool) or not isinstance(llm_hidden, int) or llm_hidden < 1:
        raise where.error(f"{gkey}.llm_hidden", f"{llm_hidden!r} is not valid", "an integer >= 1")
    for name in lists["llms"]:
        if name != "none" and name not in LLMS:
            raise where.error(f"{gkey}.llms", f"unknown LLM {name!r}", "none, " + ", ".join(LLMS))
    for key in ("prompt_tokens", "decode_tokens"):
        for n in lists[key]:
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise where.error(f"{gkey}.{key}", f"{n!r} is not valid", "integers >= 0")
    drops = []
    for text in lists["llm_drops"]:
        try:
            drops.append(parse_drop(text))
        except UhdProfileError as exc:
            raise where.error(f"{gkey}.llm_drops", str(exc), DROP_FORMS) from None
    lists["llm_drops"] = drops
    return lists


def _llm_sides(lists: dict[str, list]) -> list[tuple]:
    """(llm, prompt tokens, decode tokens, drop) of each point's LLM side; ("none", ...) for none."""
    return [
        (name, pt, dt_, drop)
        for name in lists["llms"]
        for pt, dt_, drop in (
            [(None, None, None)]
            if name == "none"
            else itertools.product(lists["prompt_tokens"], lists["decode_tokens"], lists["llm_drops"])
        )
    ]


def _depths(lists: dict[str, list], encoder: str, compressor: str) -> list:
    if compressor == "none":
        return [None]
    if lists["depths"] == ["all"]:
        return list(range(ENCODERS[encoder].layers))
    return lists["depths"]


def _count(lists: dict[str, list]) -> int:
    """Points a block expands to, without building them."""
    per = len(lists["resolutions"]) * len(lists["encodings"]) * len(lists["post_ratios"])
    per *= len(lists["dtypes"]) * len(lists["batches"]) * len(_llm_sides(lists))
    return per * sum(len(_depths(lists, e, c)) for e in lists["encoders"] for c in lists["compressors"])


def _expand(
    where: _Where,
    gkey: str,
    block: dict,
    lists: dict[str, list],
    timing: dict,
    device: str,
    dtype_choice: DtypeChoice | None = None,
) -> Iterator[Point]:
    """The block's points, in grid order. A spec is built (and validated) once and shared by the
    points that differ only in dtype or batch. ``auto`` dtypes become ``dtype_choice``'s."""
    measure_t = tuple(m for m in MEASURES if m in set(lists["measure"]) | {"flops"})
    llm_hidden = block["llm_hidden"]
    measured = measure_t != ("flops",)
    point_device = device if measured else "meta"
    llm_sides = _llm_sides(lists)
    sizes: dict[str, Any] = {}
    specs: dict[tuple, VariantSpec] = {}
    for enc, res, encoding, comp, pr, dt, b in itertools.product(
        lists["encoders"],
        lists["resolutions"],
        lists["encodings"],
        lists["compressors"],
        lists["post_ratios"],
        lists["dtypes"],
        lists["batches"],
    ):
        rkey = repr(res)
        if rkey not in sizes:
            sizes[rkey] = _resolution(where, f"{gkey}.resolutions", res)
        size = sizes[rkey]
        for d in _depths(lists, enc, comp):
            skey = (enc, rkey, encoding, comp, pr, d)
            spec = specs.get(skey)
            if spec is None:
                try:
                    spec = VariantSpec(
                        encoder=enc,
                        resolution=size,
                        compressor=None if comp == "none" else comp,
                        depth=d,
                        post_ratio=None if pr == "auto" else pr,
                        llm_hidden=llm_hidden,
                        encoding=encoding,
                    )
                except UhdProfileError as exc:
                    raise where.error(gkey, str(exc)) from None
                specs[skey] = spec
            for name, pt, dt_, drop in llm_sides:
                pipeline = None
                if name != "none":
                    try:
                        assert pt is not None and dt_ is not None  # set for every side with an LLM
                        pipeline = PipelineSpec(spec, llm=name, prompt_tokens=pt, decode_tokens=dt_, drop=drop)
                        if b != 1:
                            raise UhdProfileError(f"{pipeline.id}: batch {b}; points with an LLM run one image (batch 1)")
                        if measured:
                            check_measurable(pipeline, measure_t)
                    except UhdProfileError as exc:
                        raise where.error(gkey, str(exc)) from None
                auto = dt == AUTO_DTYPE and dtype_choice is not None
                yield Point(
                    spec=spec if pipeline is None else pipeline.variant,
                    measure=measure_t,
                    dtype=dtype_choice.dtype if auto and dtype_choice is not None else dt,
                    dtype_reason=dtype_choice.reason if auto and dtype_choice is not None else None,
                    batch=b,
                    device=point_device,
                    timing=dict(timing) if measured else {},
                    pipeline=pipeline,
                )
