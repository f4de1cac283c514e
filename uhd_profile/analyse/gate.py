"""The regression gate: a committed baseline of a run, compared with a new run (docs/measurement.md,
"The regression gate").

``baseline_from_run(run_dir)`` turns a run directory into a baseline: per point its status and the
metrics the gate compares, under the record schema's names (``uhd_profile.measure.schema``: every
metric with a ``gate`` rule -- the deterministic counts, the latency median and its raw samples,
peak and activation memory), and the environment fingerprint it was measured in (by key).
``write_baseline`` writes it as indented JSON with sorted keys, meant to be committed;
``load_baseline`` reads it back and checks its schema (version-1 baselines are upgraded).

``compare(baseline, run_records)`` gives a ``GateResult``. The rules:

* **Counts** are deterministic: they compare exactly (or within a relative tolerance) and any
  change fails, in either direction, marked ``changed``: an unexplained drop is as suspicious as
  a rise.
* **Latency** fails only when the median moved by more than the threshold *and* a two-sided
  Mann-Whitney U test on the raw samples says the move is significant (p < alpha). Over the
  threshold but not significant is ``noisy``: reported, not a pass and not a failure.
* **Memory** is one value per point (no samples, so no rank test). It fails when it moved by more
  than the threshold *and* by more than an absolute floor (allocator and page granularity: a
  0 -> 32 KiB activation change is infinite relative change and means nothing).
* **Status**: a point that newly fails (``oom`` or ``error``) is ``failed``; a point present on one
  side only (or ``skipped`` in the run) is ``missing``. Both fail the gate.
* **Machines**: time and memory are compared only between equal fingerprint keys
  (``env.fingerprint_key``); otherwise they are refused, with the differing fields, unless
  ``allow_cross_machine``. Refusing is not a failure: counts still compare.

Pure functions; only the CLI (``cli_gate``) prints and writes.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from uhd_profile.errors import UhdProfileError
from uhd_profile.files import atomic_write_text, check_output_file
from uhd_profile.measure.env import fingerprint_key, key_differences
from uhd_profile.measure.schema import READABLE_VERSIONS, SCHEMA_VERSION, gated, upgrade_baseline_points
from uhd_profile.run.store import read_header, records
from uhd_profile.version import __version__

SCHEMA = "uhd-profile/baseline"

DEFAULT_FLOPS_TOLERANCE = 0.0
DEFAULT_TIME_THRESHOLD = 0.10
DEFAULT_MEMORY_THRESHOLD = 0.10
DEFAULT_MEMORY_FLOOR_BYTES = 2**20
DEFAULT_ALPHA = 0.05

MARKS: tuple[str, ...] = ("missing", "failed", "changed", "worse", "noisy", "better", "same")
"""Point marks, most severe first; a point carries the most severe mark of its metrics.
``missing``, ``failed``, ``changed`` and ``worse`` fail the gate."""
FAILING_MARKS = frozenset({"missing", "failed", "changed", "worse"})

EXACT_MAX_N = 50
"""Mann-Whitney: exact null distribution when there are no ties and n1 + n2 <= this."""


# ---------------------------------------------------------------------------------------------
# Mann-Whitney U


@dataclass(frozen=True)
class RankTest:
    """A two-sided Mann-Whitney U test of sample ``x`` against sample ``y``.

    ``u`` is U of ``x`` (pairs (xi, yj) with xi > yj, ties counting one half); ``p`` the two-sided
    p-value; ``method`` ``"exact"`` (no ties, small samples: the exact null distribution) or
    ``"normal"`` (normal approximation with tie correction and continuity correction).
    """

    u: float
    p: float
    method: str
    n_x: int
    n_y: int


def _ranks(values: Sequence[float]) -> tuple[list[float], list[int]]:
    """1-based ranks with ties averaged, and the sizes of the tie groups (> 1 only)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    ties: list[int] = []
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        avg = (i + j) / 2 + 1
        for k in range(i, j + 1):
            ranks[order[k]] = avg
        if j > i:
            ties.append(j - i + 1)
        i = j + 1
    return ranks, ties


def _u_distribution(m: int, n: int) -> list[int]:
    """Counts of each U = 0..m*n over all C(m+n, m) arrangements without ties: the coefficients
    of the Gaussian binomial [m+n choose m]_q = prod_{i=1..m} (1 - q^(n+i)) / (1 - q^i)."""
    poly = [1]
    for i in range(1, m + 1):
        # multiply by (1 - q^(n+i))
        grown = poly + [0] * (n + i)
        for k, c in enumerate(poly):
            grown[k + n + i] -= c
        # divide by (1 - q^i): running sum with stride i (exact: the quotient is a polynomial)
        for k in range(i, len(grown)):
            grown[k] += grown[k - i]
        poly = grown[: i * n + 1]  # [n+i choose i]_q has degree i*n; the rest is zeros
    return poly


def mann_whitney_u(x: Sequence[float], y: Sequence[float]) -> RankTest:
    """Two-sided Mann-Whitney U test (see ``RankTest``). Both samples need at least one value."""
    n1, n2 = len(x), len(y)
    if n1 < 1 or n2 < 1:
        raise ValueError(f"mann_whitney_u needs two non-empty samples, got sizes {n1} and {n2}")
    ranks, ties = _ranks(list(x) + list(y))
    u = sum(ranks[:n1]) - n1 * (n1 + 1) / 2
    mu = n1 * n2 / 2
    if not ties and n1 + n2 <= EXACT_MAX_N:
        dist = _u_distribution(n1, n2)
        total = sum(dist)
        k = int(round(min(u, n1 * n2 - u)))  # the distribution is symmetric about mu
        p = min(1.0, 2 * sum(dist[: k + 1]) / total)
        return RankTest(u=u, p=p, method="exact", n_x=n1, n_y=n2)
    n = n1 + n2
    tie_term = sum(t**3 - t for t in ties) / (n * (n - 1)) if n > 1 else 0.0
    var = n1 * n2 / 12 * ((n + 1) - tie_term)
    if var <= 0:  # every value equal: no evidence of any shift
        return RankTest(u=u, p=1.0, method="normal", n_x=n1, n_y=n2)
    z = max(abs(u - mu) - 0.5, 0.0) / math.sqrt(var)
    return RankTest(u=u, p=min(1.0, math.erfc(z / math.sqrt(2))), method="normal", n_x=n1, n_y=n2)


def _median(values: Sequence[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


# ---------------------------------------------------------------------------------------------
# Baseline


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities become None (strict JSON, committed files)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def _env_key(env: dict | None) -> str | None:
    return fingerprint_key(env) if env else None


def _point_entry(rec: dict, counts_only: bool) -> dict:
    """One point of a baseline: status, point, environment key, and the metrics the gate compares
    (``exact`` ones only when ``counts_only``), under their schema names."""
    m = rec.get("metrics") or {}
    rules = ("exact",) if counts_only else ("exact", "latency", "memory")
    names = [n for rule in rules for n in gated(rule)]
    return _clean(
        {
            "variant_id": rec["variant_id"],
            "status": rec["status"],
            "error": rec.get("error"),
            "point": rec.get("point"),
            "env_key": _env_key(rec.get("env")),
            "metrics": {n: m[n] for n in names if m.get(n) is not None},
        }
    )


def baseline_from_records(
    records: list[dict],
    recipe_name: str | None = None,
    recipe_hash: str | None = None,
    counts_only: bool = False,
    source: str | None = None,
) -> dict:
    """A baseline (schema ``SCHEMA`` version ``SCHEMA_VERSION``) of a run's records.

    ``counts_only`` leaves out latency and memory (a baseline that does not churn when it is
    regenerated on another machine: what a CI baseline from a developer box should be). The
    fingerprint of every environment the points ran in is kept under its key.
    """
    points: dict[str, dict] = {}
    envs: dict[str, dict] = {}
    for rec in records:
        pid = rec["point_id"]
        if pid in points:
            raise UhdProfileError(f"point {pid} ({rec.get('variant_id')}) appears twice in the run")
        points[pid] = _point_entry(rec, counts_only)
        key = points[pid]["env_key"]
        if key and key not in envs:
            envs[key] = _clean(dict(rec["env"]))
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "uhd_profile_version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "recipe_name": recipe_name,
        "recipe_hash": recipe_hash,
        "source_run": source,
        "counts_only": counts_only,
        "environments": envs,
        "points": points,
    }


def baseline_from_run(run_dir: str | os.PathLike, counts_only: bool = False, allow_partial: bool = False) -> dict:
    """``baseline_from_records`` of a run directory (header checked, see ``store.records``). A run
    with a torn or corrupt line is refused (a baseline missing a point would be committed as the
    truth) unless ``allow_partial``."""
    head = read_header(run_dir)
    recs = records(run_dir, allow_partial=allow_partial)
    if not recs:
        raise UhdProfileError(f"{run_dir} holds no records yet; run the sweep first")
    return baseline_from_records(recs, head.get("recipe_name"), head.get("recipe_hash"), counts_only, str(run_dir))


def dumps_baseline(baseline: dict) -> str:
    """The committed text form: indented, sorted keys, strict JSON, trailing newline."""
    return json.dumps(baseline, indent=2, sort_keys=True, allow_nan=False) + "\n"


def write_baseline(baseline: dict, path: str | os.PathLike, what: str = "--out") -> None:
    """Write ``baseline`` to ``path`` whole or not at all (a temporary file, fsynced, renamed); an
    unusable target or a full disk is a one-line error and leaves an earlier file there unchanged."""
    check_output_file(path, what)
    atomic_write_text(path, dumps_baseline(baseline), what=what, kept=f"{path} is unchanged")


def load_baseline(path: str | os.PathLike) -> dict:
    """Read a baseline file; a one-line ``UhdProfileError`` if it is missing, unreadable, not
    JSON, not a baseline, or of another schema version."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise UhdProfileError(
            f"baseline {path}: no such file; write one with `uhd-profile baseline RUN_DIR --out {path}`"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UhdProfileError(f"baseline {path}: cannot read it ({type(exc).__name__}: {exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UhdProfileError(f"baseline {path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise UhdProfileError(
            f"baseline {path}: not a {SCHEMA} file (schema {data.get('schema') if isinstance(data, dict) else None!r})"
        )
    if data.get("schema_version") not in READABLE_VERSIONS:
        raise UhdProfileError(
            f"baseline {path}: schema version {data.get('schema_version')!r} is not supported; this "
            f"uhd-profile reads versions {', '.join(map(str, READABLE_VERSIONS))}: regenerate it with "
            "`uhd-profile baseline`"
        )
    points = data.get("points")
    if not isinstance(points, dict) or not all(isinstance(v, dict) and "status" in v for v in points.values()):
        raise UhdProfileError(f"baseline {path}: 'points' must map point ids to entries with a status")
    version = data["schema_version"]
    if version != SCHEMA_VERSION:
        data = {
            **data,
            "schema_version": SCHEMA_VERSION,
            "points": upgrade_baseline_points(points, version),
            "upgraded_from": version,
        }
    return data


# ---------------------------------------------------------------------------------------------
# Comparison


@dataclass(frozen=True)
class GateSettings:
    """Thresholds of the gate (relative values are fractions: 0.1 = 10%)."""

    flops_tolerance: float = DEFAULT_FLOPS_TOLERANCE  # counts: |new - base| <= tol * |base| is the same
    time_threshold: float = DEFAULT_TIME_THRESHOLD  # latency: relative change of the median
    memory_threshold: float = DEFAULT_MEMORY_THRESHOLD  # memory: relative change
    memory_floor_bytes: int = DEFAULT_MEMORY_FLOOR_BYTES  # memory: absolute change below this is the same
    alpha: float = DEFAULT_ALPHA  # latency: significance level of the rank test
    allow_cross_machine: bool = False  # compare time and memory across fingerprint keys
    counts_only: bool = False  # compare statuses and counts only

    def __post_init__(self):
        for name in ("flops_tolerance", "time_threshold", "memory_threshold"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise UhdProfileError(
                    f"--{name.replace('_', '-')} {v!r} is not valid; give a finite relative change >= 0, e.g. 0.1 for 10%"
                )
        if not isinstance(self.memory_floor_bytes, int) or self.memory_floor_bytes < 0:
            raise UhdProfileError(f"--memory-floor {self.memory_floor_bytes!r} is not valid; give bytes >= 0")
        if not isinstance(self.alpha, (int, float)) or not 0 < self.alpha < 1:
            raise UhdProfileError(f"--alpha {self.alpha!r} is not valid; give a significance level in (0, 1), e.g. 0.05")


@dataclass
class MetricDiff:
    """One metric of one point: ``kind`` is ``count``, ``latency`` or ``memory``; ``rel_change`` is
    new / base - 1 (None when base is 0 or a side is absent); ``p_value`` only for latency."""

    name: str
    kind: str
    baseline: Any
    run: Any
    rel_change: float | None
    mark: str
    p_value: float | None = None
    test: str | None = None


@dataclass
class PointDiff:
    """One point's comparison: its mark (``MARKS``), statuses and the metric differences."""

    point_id: str
    variant_id: str
    device: str | None
    mark: str
    status_baseline: str | None
    status_run: str | None
    metrics: list[MetricDiff] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    time_compared: bool = False

    @property
    def regression(self) -> bool:
        return self.mark in FAILING_MARKS

    def metric(self, name: str) -> MetricDiff | None:
        return next((m for m in self.metrics if m.name == name), None)


@dataclass
class GateResult:
    """The gate's verdict: ``fail`` (exit 1) if any point is missing, failed, changed or worse;
    else ``noisy`` if any change was over a threshold without being significant; else ``pass``.
    ``refused`` lists the environment pairs whose time and memory were not compared."""

    verdict: str
    points: list[PointDiff]
    settings: GateSettings
    refused: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.verdict == "fail" else 0

    def marks(self) -> dict[str, int]:
        out = dict.fromkeys(MARKS, 0)
        for p in self.points:
            out[p.mark] += 1
        return {k: v for k, v in out.items() if v}

    def to_json(self) -> dict:
        return _clean(
            {
                "verdict": self.verdict,
                "exit_code": self.exit_code,
                "marks": self.marks(),
                "settings": asdict(self.settings),
                "refused": self.refused,
                "notes": self.notes,
                "points": [{**asdict(p), "regression": p.regression} for p in self.points],
            }
        )


def _rel(base: float, new: float) -> float | None:
    if base == 0:
        return None if new == 0 else math.copysign(math.inf, new)
    return new / base - 1


def _compare_counts(base: dict, new_metrics: dict, tol: float) -> list[MetricDiff]:
    """Every ``exact`` metric: numbers within ``tol`` relative, anything else (op tables) by equality."""
    out = []
    for key in gated("exact"):
        b, n = base.get(key) or None, new_metrics.get(key) or None  # an empty op table is no table
        if key != "uncounted_ops":
            b, n = base.get(key), new_metrics.get(key)
        if b is None and n is None:
            continue
        if b is None or n is None:
            out.append(MetricDiff(key, "count", b, n, None, "changed"))
        elif isinstance(b, (int, float)) and isinstance(n, (int, float)):
            same = abs(n - b) <= tol * abs(b)
            out.append(MetricDiff(key, "count", b, n, _rel(b, n), "same" if same else "changed"))
        else:
            out.append(MetricDiff(key, "count", b, n, None, "same" if b == n else "changed"))
    return out


def _compare_latency(base: dict, m: dict, s: GateSettings) -> MetricDiff | None:
    """The median latency: over the threshold *and* significant (rank test on the raw samples) fails."""
    b_samples = [v for v in (base.get("latency_samples_s") or []) if v is not None]
    n_samples = [v for v in (m.get("latency_samples_s") or []) if v is not None]
    b_med = _median(b_samples) if b_samples else base.get("latency_median_s")
    n_med = _median(n_samples) if n_samples else m.get("latency_median_s")
    if b_med is None or n_med is None:
        return None
    rel = _rel(b_med, n_med)
    diff = MetricDiff("latency_median_s", "latency", b_med, n_med, rel, "same")
    if rel is None or abs(rel) <= s.time_threshold:
        return diff
    if b_samples and n_samples:
        t = mann_whitney_u(n_samples, b_samples)
        diff.p_value, diff.test = t.p, f"mann-whitney ({t.method}, n={t.n_y} vs {t.n_x})"
        if t.p < s.alpha:
            diff.mark = "worse" if rel > 0 else "better"
            return diff
    else:
        diff.test = "no raw samples on one side: not testable"
    diff.mark = "noisy"
    return diff


def _compare_memory(base: dict, m: dict, s: GateSettings) -> list[MetricDiff]:
    out = []
    for key in gated("memory"):
        b, n = base.get(key), m.get(key)
        if b is None or n is None:
            continue
        rel = _rel(b, n)
        mark = "same"
        if abs(n - b) > s.memory_floor_bytes and (rel is None or abs(rel) > s.memory_threshold):
            mark = "worse" if n > b else "better"
        out.append(MetricDiff(key, "memory", b, n, rel, mark))
    return out


def _worst(marks: list[str]) -> str:
    return min(marks, key=MARKS.index) if marks else "same"


def compare(baseline: dict, run_records: list[dict], settings: GateSettings | None = None) -> GateResult:
    """Compare a run's records with a baseline (see the module docstring for the rules)."""
    s = settings or GateSettings()
    base_points: dict[str, dict] = baseline["points"]
    envs: dict[str, dict] = baseline.get("environments") or {}
    run_by_id: dict[str, dict] = {}
    for rec in run_records:
        run_by_id[rec["point_id"]] = rec
    notes: list[str] = []
    if baseline.get("counts_only") and not s.counts_only:
        notes.append("the baseline is counts-only: latency and memory were not compared")
    run_hashes = {r.get("recipe_hash") for r in run_records}
    if baseline.get("recipe_hash") and run_hashes and run_hashes != {baseline["recipe_hash"]}:
        notes.append(
            f"the run's recipe hash {', '.join(sorted(str(h) for h in run_hashes))} differs from the "
            f"baseline's {baseline['recipe_hash']} ({baseline.get('recipe_name')}): points may not line up"
        )
    refused: dict[tuple[str | None, str | None], dict] = {}
    diffs: list[PointDiff] = []
    for pid in sorted(set(base_points) | set(run_by_id)):
        b, r = base_points.get(pid), run_by_id.get(pid)
        variant = (b or {}).get("variant_id") or (r or {}).get("variant_id") or "?"
        point = (r or {}).get("point") or (b or {}).get("point") or {}
        d = PointDiff(pid, variant, point.get("device"), "same", (b or {}).get("status"), (r or {}).get("status"))
        diffs.append(d)
        if r is None:
            d.mark = "missing"
            d.notes.append("in the baseline, not in the run")
            continue
        if b is None:
            d.mark = "missing"
            d.notes.append("in the run, not in the baseline (update the baseline if the point is new)")
            continue
        bs, rs = b["status"], r["status"]
        if bs == "ok" and rs != "ok" or bs != "ok" and rs != "ok" and bs != rs:
            d.mark = "missing" if rs == "skipped" else "failed"
            d.notes.append(f"was {bs}, now {rs}" + (f": {r.get('error')}" if r.get("error") else ""))
            continue
        if bs != "ok":
            d.mark = "same" if rs == bs else "better"
            d.notes.append(f"{bs} in both" if rs == bs else f"was {bs}, now ok: update the baseline to pin its numbers")
            continue
        m = r.get("metrics") or {}
        bm = b.get("metrics") or {}
        d.metrics.extend(_compare_counts(bm, m, s.flops_tolerance))
        has_timed = any(k in bm for rule in ("latency", "memory") for k in gated(rule)) and not s.counts_only
        if has_timed:
            b_key, r_key = b.get("env_key"), _env_key(r.get("env"))
            if b_key != r_key and not s.allow_cross_machine:
                pair = (b_key, r_key)
                if pair not in refused:
                    refused[pair] = {
                        "env_key_baseline": b_key,
                        "env_key_run": r_key,
                        "differences": {
                            k: list(v) for k, v in key_differences(envs.get(b_key or "") or {}, r.get("env") or {}).items()
                        },
                        "points": 0,
                    }
                refused[pair]["points"] += 1
                d.notes.append("time and memory not compared: another machine (--allow-cross-machine to force)")
            else:
                if b_key != r_key:
                    d.notes.append("time and memory compared across machines (--allow-cross-machine)")
                d.time_compared = True
                lat = _compare_latency(bm, m, s)
                if lat is not None:
                    d.metrics.append(lat)
                d.metrics.extend(_compare_memory(bm, m, s))
        d.mark = _worst([x.mark for x in d.metrics])
    diffs.sort(key=lambda p: (p.variant_id, p.device or "", p.point_id))
    marks = {p.mark for p in diffs}
    verdict = "fail" if marks & FAILING_MARKS else "noisy" if "noisy" in marks else "pass"
    return GateResult(verdict, diffs, s, list(refused.values()), notes)


def check_run(run_dir: str | os.PathLike, baseline: dict, settings: GateSettings | None = None) -> GateResult:
    """``compare`` a run directory with a loaded baseline."""
    return compare(baseline, records(run_dir), settings)
