"""The record schema: the one place a point, a metric and a record are defined.

* A :class:`Point` is what defines one measurement: a variant (``VariantSpec``), what to measure,
  dtype, batch, device and timing settings. ``point_id`` hashes all of it.
* A :class:`Metric` is one measured or counted quantity, named once with its unit in the name
  (``latency_median_s``, ``peak_mem_bytes``, ``paper_flops``). ``METRICS`` holds them all; the
  probes fill them (:func:`count_metrics`, and ``bench`` from the timing, memory, telemetry and
  roofline probes, whose result fields carry these very names), the store writes them, and
  ``uhd_profile.load`` (its columns and dtypes), the gate (what it compares, and how) and the report
  read them by these names. Adding a metric is one :func:`register_metric` call here.
* A :class:`Record` is one point's outcome: ids, status, error, metrics, environment, recipe.

This module sits in the measurement layer because the probes fill it; the run layer (recipes,
store, sweep) and the analysis layer (report, gate) read it.

Schema history: version 3 (this one) names a pipeline's in-LLM token drop ``drop``; version 2
(development builds of uhd-profile 0.2) called it ``plan``, and already wrote sizes as
``width_px``/``height_px`` and named every metric as above; version 1 (uhd-profile 0.1) wrote
``resolution: [H, W]`` and ``paper`` for ``paper_flops``. Older records and baselines are upgraded
when read (:func:`upgrade_record`, :func:`upgrade_baseline_points`); their point ids are recomputed
in the version-3 form (a version-2 point changes only where it has an LLM).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from uhd_profile.count.conventions import CONVENTIONS
from uhd_profile.errors import UhdProfileError
from uhd_profile.measure.env import fingerprint_key
from uhd_profile.model.pipeline import STAGES, PipelineSpec
from uhd_profile.model.variants import VariantSpec

SCHEMA_VERSION = 3
READABLE_VERSIONS = (1, 2, SCHEMA_VERSION)
STATUSES = ("ok", "oom", "error", "skipped")
MEASURES = ("flops", "latency", "memory", "energy")
GATES = ("exact", "latency", "memory")
KINDS = ("count", "latency", "memory", "energy", "roofline", "run")

# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """One quantity a record can carry.

    ``name`` (snake_case, unit suffix where it has a unit: ``_s`` seconds, ``_bytes``, ``_j``
    joules, ``_w`` watts, ``_c`` degrees Celsius, ``_per_s``; counts are integers in the unit their
    name says); ``dtype`` the pandas dtype of its ``load()`` column; ``kind`` which probe fills it
    (``KINDS``); ``gate`` how the regression gate compares it (``exact``: deterministic, any change
    fails; ``latency``: threshold plus a rank test on the samples; ``memory``: threshold plus an
    absolute floor; None: not compared); ``doc`` one line.
    """

    name: str
    dtype: str
    kind: str
    gate: str | None
    doc: str


METRICS: dict[str, Metric] = {}
"""Every metric, by name, in column order."""


def register_metric(name: str, dtype: str, kind: str, gate: str | None, doc: str) -> Metric:
    """Add a metric to the schema (refuses a name twice, an unknown kind or gate)."""
    if name in METRICS:
        raise ValueError(f"metric {name} is already in the schema")
    if kind not in KINDS:
        raise ValueError(f"metric {name}: kind {kind!r} is not one of {KINDS}")
    if gate is not None and gate not in GATES:
        raise ValueError(f"metric {name}: gate {gate!r} is not one of {GATES}")
    m = Metric(name, dtype, kind, gate, doc)
    METRICS[name] = m
    return m


def unregister_metric(name: str) -> None:
    """Remove a metric (for extensions and tests that add one temporarily)."""
    METRICS.pop(name)


# counts: deterministic, compared exactly by the gate
for _c in CONVENTIONS.values():
    register_metric(_c.column, "Int64", "count", "exact", f"counted per forward, {_c.unit}, {_c.name} convention")
register_metric("params", "Int64", "count", "exact", "parameters of the counted module")
register_metric("tokens_in", "Int64", "count", "exact", "tokens entering the first encoder layer, summed over views")
register_metric("tokens_llm", "Int64", "count", "exact", "tokens leaving the variant (what the LLM sees), summed over views")
register_metric("uncounted_ops", "object", "count", "exact", "op name -> calls of ops with no FLOPs formula (not in any total)")
register_metric("count_s", "Float64", "count", None, "wall time of the FLOPs count, s")
# latency (timing probe: uhd_profile.measure.timing.LatencyStats)
register_metric("latency_median_s", "Float64", "latency", "latency", "median latency of one forward, s")
register_metric("latency_p10_s", "Float64", "latency", None, "10th percentile latency, s")
register_metric("latency_p90_s", "Float64", "latency", None, "90th percentile latency, s")
register_metric("latency_iqr_over_median", "Float64", "latency", None, "(q75 - q25) / median of the samples")
register_metric("latency_n", "Int64", "latency", None, "timed samples")
register_metric("latency_samples_s", "object", "latency", "latency", "every raw sample, s (the gate's rank test reads them)")
register_metric("noise_flag", "string", "latency", None, "ok | noisy (IQR/median >= 10%) | unreliable (>= 25%)")
register_metric("stop_reason", "string", "latency", None, "target_iqr | max_samples | time_limit")
register_metric("latency_unmet", "string", "latency", None, "stop-rule conditions not met when the time limit ended it")
register_metric("first_call_s", "Float64", "latency", None, "the untimed first call (compilation, warm-up), s")
register_metric("warmup_iters", "Int64", "latency", None, "warm-up iterations run")
register_metric("warmup_s", "Float64", "latency", None, "warm-up wall time, s")
register_metric("timer", "string", "latency", None, "perf_counter_ns | cuda_events")
register_metric("cache", "string", "latency", None, "hot | cold (L2 flushed before each iteration)")
# memory (uhd_profile.measure.memory.MemoryStats)
register_metric("weights_bytes", "Int64", "memory", "exact", "parameters and buffers of the built model, bytes")
register_metric("peak_mem_bytes", "Int64", "memory", "memory", "peak memory of one forward, bytes (CUDA allocator; CPU peak RSS)")
register_metric("activation_mem_bytes", "Int64", "memory", "memory", "peak minus what was held before the forward, bytes")
register_metric("baseline_mem_bytes", "Int64", "memory", None, "held just before the forward (weights, inputs, runtime), bytes")
register_metric("reserved_peak_mem_bytes", "Int64", "memory", None, "CUDA caching allocator's reserved peak, bytes")
register_metric("nvml_used_mem_bytes", "Int64", "memory", None, "NVML's used memory of this process, bytes")
register_metric("memory_method", "string", "memory", None, "cuda_allocator | clear_refs+VmHWM | child_process")
register_metric("memory_note", "string", "memory", None, "what the memory figures include")
# memory model (uhd_profile.count.memory_model): predicted before the point runs, next to what was measured
register_metric("predicted_peak_mem_bytes", "Int64", "memory", None, "predicted peak: weights + inputs + activations, bytes")
register_metric("predicted_activation_mem_bytes", "Int64", "memory", None, "predicted peak above weights and inputs, bytes")
register_metric("predicted_attention_score_bytes", "Int64", "memory", None, "of those: attention score matrices, bytes")
register_metric("memory_model_device", "string", "memory", None, "cpu | cuda: the device the prediction is for")
# energy and clocks (uhd_profile.measure.telemetry.Telemetry)
register_metric("energy_per_image_j", "Float64", "energy", None, "GPU energy per image, J")
register_metric("mean_power_w", "Float64", "energy", None, "mean GPU power while timing, W")
register_metric("max_temp_c", "Float64", "energy", None, "highest GPU temperature while timing, C")
register_metric("throttled_fraction", "Float64", "energy", None, "share of telemetry samples under clock slowdown")
register_metric("telemetry_reason", "string", "energy", None, "why there is no telemetry (CPU, NVML missing, disabled)")
# roofline (uhd_profile.measure.roofline)
register_metric("achieved_flops_per_s", "Float64", "roofline", None, "flops-convention count / median latency, FLOP/s")
register_metric("mfu", "Float64", "roofline", None, "achieved / the device's dense peak for the dtype")
register_metric("peak_flops_per_s", "Float64", "roofline", None, "the peak MFU is taken against, FLOP/s")
register_metric("peak_source", "string", "roofline", None, "where the peak comes from (datasheet, CPU calibration)")
# the run
register_metric("threads", "Int64", "run", None, "CPU threads torch used")
register_metric("env_key", "string", "run", None, "hash of the environment fields that make timings comparable")
register_metric("pid", "Int64", "run", None, "the measuring process")
register_metric("measured_dtype", "string", "run", None, "the dtype the point ran in (a measured point, or dtype auto)")
register_metric("dtype_reason", "string", "run", None, "why that dtype: the recipe's, or what auto compared on the device")
register_metric("build_s", "Float64", "run", None, "wall time of building the measured model (random weights), s")
# end to end: points with an LLM (uhd_profile.model.pipeline; counted by uhd_profile.count.pipeline,
# timed by uhd_profile.measure.pipeline). Such a point keeps the variant's own metrics above (macs,
# tokens_llm, ...: what the same point without an LLM records) and adds its stages.
for _s in STAGES:
    for _c in CONVENTIONS.values():
        register_metric(f"{_s}_{_c.column}", "Int64", "count", "exact", f"{_s} stage, {_c.unit}, {_c.name} convention")
for _c in CONVENTIONS.values():
    register_metric(
        f"decode_{_c.column}_per_token",
        "Float64",
        "count",
        "exact",
        f"one decode forward (mean), {_c.unit}, {_c.name} convention",
    )
register_metric("prefill_dense_macs", "Int64", "count", "exact", "prefill, causal attention charged as the full square, MACs")
register_metric("prefill_textbook_macs", "Int64", "count", "exact", "textbook per-layer prefill formula (printed form), MACs")
register_metric("prefill_tokens", "Int64", "count", "exact", "tokens entering the LLM prefill: visual + prompt")
register_metric(
    "kv_cache_bytes",
    "Int64",
    "count",
    "exact",
    "KV cache (and linear-attention state) after prefill and decode, point dtype, bytes",
)
register_metric("llm_weights_bytes", "Int64", "memory", "exact", "LLM parameters x bytes per element (point dtype), bytes")
register_metric("ttft_vision_s", "Float64", "latency", None, "median time of the vision stage (ViT, connector excluded), s")
register_metric("ttft_connector_s", "Float64", "latency", None, "median time of the connector stage, s")
register_metric("ttft_prefill_s", "Float64", "latency", None, "LLM prefill, s (scaled x layers / llm_layers_timed when fewer)")
register_metric("ttft_s", "Float64", "latency", None, "time to first token: vision + connector + prefill, s")
register_metric(
    "decode_token_s", "Float64", "latency", None, "one decode forward at visual + prompt context, s (scaled likewise)"
)
register_metric(
    "llm_layers_timed", "Int64", "latency", None, "decoder layers timed (fewer than the LLM's: measured on N and scaled)"
)
register_metric("vision_activation_mem_bytes", "Int64", "memory", "memory", "vision stage forward: peak minus before, bytes")
register_metric(
    "prefill_activation_mem_bytes",
    "Int64",
    "memory",
    "memory",
    "LLM prefill forward on the timed layers: peak minus before, bytes",
)


def gated(gate: str) -> tuple[str, ...]:
    """Names of the metrics the gate compares with rule ``gate`` (``GATES``)."""
    return tuple(m.name for m in METRICS.values() if m.gate == gate)


def fill(metrics: dict[str, Any], result: Any) -> dict[str, Any]:
    """Copy every field of the dataclass ``result`` whose name is a metric into ``metrics``;
    returns ``metrics``. Probe results name their fields after the metrics they fill."""
    for f in fields(result):
        if f.name in METRICS:
            metrics[f.name] = getattr(result, f.name)
    return metrics


def count_metrics(fc: Any) -> dict[str, Any]:
    """The count metrics of a ``FlopCount``: every convention, parameters, tokens, uncounted ops."""
    m: dict[str, Any] = {c.column: fc.get(c.name) for c in CONVENTIONS.values()}
    m.update(params=fc.params, tokens_in=fc.tokens_in, tokens_llm=fc.tokens_llm, count_s=round(fc.seconds, 6))
    if fc.uncounted_ops:
        m["uncounted_ops"] = dict(fc.uncounted_ops)
    return m


def predicted_memory_metrics(prediction: Any) -> dict[str, Any]:
    """The memory-model metrics of a ``count.memory_model.MemoryPrediction`` (one vision stage)."""
    return {
        "predicted_peak_mem_bytes": prediction.peak_bytes,
        "predicted_activation_mem_bytes": prediction.activation_bytes,
        "predicted_attention_score_bytes": prediction.peak_stage.score_bytes,
        "memory_model_device": prediction.device_kind,
    }


def check_metrics(metrics: dict[str, Any] | None) -> None:
    """Refuse metric names the schema does not define (a typo would otherwise vanish silently)."""
    unknown = sorted(set(metrics or {}) - set(METRICS))
    if unknown:
        raise ValueError(f"metrics {unknown} are not in the record schema (uhd_profile.measure.schema.METRICS)")


# --------------------------------------------------------------------------------------------
# Points
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """One thing a sweep does: a variant, what to measure (``MEASURES``; counting always) and how.

    ``device`` is ``meta`` for a count-only point (nothing runs on a device), else ``cpu``/``cuda[:N]``;
    ``timing`` holds ``TimingSettings`` fields (only measured points use them). ``dtype_reason``
    says why ``dtype`` (set when the recipe asked for ``auto``: what the device compared); it is
    not part of the point's identity (the resolved ``dtype`` is).
    """

    spec: VariantSpec
    measure: tuple[str, ...] = ("flops",)
    dtype: str = "fp32"
    batch: int = 1
    device: str = "meta"
    timing: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    pipeline: PipelineSpec | None = None
    dtype_reason: str | None = field(default=None, compare=False, hash=False)

    def __post_init__(self) -> None:
        # a point with an LLM carries the pipeline; its spec is the pipeline's variant (llm_hidden
        # derived from the LLM), so the two cannot disagree
        p = self.pipeline
        if p is not None and self.spec != p.variant:
            if self.spec.with_(llm_hidden=p.variant.llm_hidden) != p.variant:
                raise ValueError(f"point spec {self.spec.id} is not the pipeline's variant {p.variant.id}")
            object.__setattr__(self, "spec", p.variant)

    @property
    def measured(self) -> bool:
        return set(self.measure) != {"flops"}

    def _identity(self) -> dict[str, Any]:
        d = {
            "spec": self.spec.to_dict(),
            "measure": list(self.measure),
            "dtype": self.dtype,
            "batch": self.batch,
            "device": self.device,
            "timing": dict(sorted(self.timing.items())) if self.measured else {},
        }
        if self.pipeline is not None:  # only then: ids of points without an LLM are unchanged
            d["pipeline"] = self.pipeline.llm_dict()
        return d

    @property
    def variant_id(self) -> str:
        """The pipeline's id for a point with an LLM (it extends the variant id), else the variant's."""
        return self.pipeline.id if self.pipeline is not None else self.spec.id

    @property
    def point_id(self) -> str:
        """sha256 (16 hex digits) of the canonical JSON of everything that defines the point."""
        blob = json.dumps(self._identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        """The point as stored: ``point_id``, ``variant_id``, ``spec`` (``VariantSpec.to_dict``), the settings."""
        d = self._identity()
        d["timing"] = dict(self.timing)
        if self.dtype_reason is not None:
            d["dtype_reason"] = self.dtype_reason
        return {"point_id": self.point_id, "variant_id": self.variant_id, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Point:
        spec = VariantSpec.from_dict(d["spec"])
        return cls(
            spec=spec,
            measure=tuple(d["measure"]),
            dtype=d["dtype"],
            batch=int(d["batch"]),
            device=d["device"],
            timing=dict(d.get("timing") or {}),
            pipeline=PipelineSpec.from_parts(spec, d["pipeline"]) if d.get("pipeline") else None,
            dtype_reason=d.get("dtype_reason"),
        )

    def dtype_metrics(self) -> dict[str, Any]:
        """``measured_dtype`` and ``dtype_reason`` for a measured point or one whose dtype came from
        ``auto`` (empty for a count-only point with a fixed dtype: nothing ran in it)."""
        if not self.measured and self.dtype_reason is None:
            return {}
        return {"measured_dtype": self.dtype, "dtype_reason": self.dtype_reason or f"the recipe asks for {self.dtype}"}


POINT_COLUMNS: dict[str, str] = {
    "encoder": "string",
    "width_px": "Int64",
    "height_px": "Int64",
    "encoding": "string",
    "packing": "string",
    "max_slices": "Int64",
    "scale_resolution_px": "Int64",
    "compressor": "string",
    "depth": "Int64",
    "post_ratio": "Int64",
    "llm_hidden": "Int64",
    "measure": "string",
    "dtype": "string",
    "batch": "Int64",
    "device": "string",
    "llm": "string",
    "prompt_tokens": "Int64",
    "decode_tokens": "Int64",
    "llm_drop": "string",
}
"""``load()`` columns that describe the point (spec fields, then the settings, then the LLM side
of a point with an LLM: null for the others)."""


def point_row(point: dict[str, Any]) -> dict[str, Any]:
    """A stored point as ``POINT_COLUMNS`` values (absent several-view fields take their defaults)."""
    spec = VariantSpec.from_dict(point["spec"])
    return {
        "encoder": spec.encoder,
        "width_px": spec.size.width,
        "height_px": spec.size.height,
        "encoding": spec.encoding,
        "packing": spec.packing,
        "max_slices": spec.max_slices,
        "scale_resolution_px": spec.scale_resolution,
        "compressor": spec.compressor,
        "depth": spec.depth,
        "post_ratio": spec.ratio,
        "llm_hidden": spec.llm_hidden,
        "measure": "+".join(point["measure"]),
        "dtype": point["dtype"],
        "batch": point["batch"],
        "device": point["device"],
        "llm": (point.get("pipeline") or {}).get("llm"),
        "prompt_tokens": (point.get("pipeline") or {}).get("prompt_tokens"),
        "decode_tokens": (point.get("pipeline") or {}).get("decode_tokens"),
        "llm_drop": (point.get("pipeline") or {}).get("drop"),
    }


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass
class Record:
    """One point's outcome, as stored (one JSON line) and as ``bench --json`` prints it.

    ``status`` is one of ``STATUSES``; ``error`` its first line when not ok; ``metrics`` maps metric
    names (``METRICS``) to values, None unless the point ran; ``env`` the environment fingerprint
    (``uhd_profile.measure.env.fingerprint``); ``started_utc`` ISO time; ``duration_s`` wall time.
    """

    point_id: str
    variant_id: str
    point: dict[str, Any]
    status: str
    error: str | None
    metrics: dict[str, Any] | None
    env: dict[str, Any]
    recipe_hash: str
    recipe_name: str
    started_utc: str
    duration_s: float
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {STATUSES}")
        check_metrics(self.metrics)

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Record:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def make_record(
    point: dict[str, Any],
    status: str,
    metrics: dict[str, Any] | None,
    error: str | None,
    env: dict[str, Any],
    recipe_hash: str,
    recipe_name: str,
    started_utc: str,
    duration_s: float,
) -> dict[str, Any]:
    """One point's record as the JSON dict the store writes (validated by :class:`Record`)."""
    return Record(
        point["point_id"],
        point["variant_id"],
        point,
        status,
        error,
        metrics,
        env,
        recipe_hash,
        recipe_name,
        started_utc,
        round(float(duration_s), 6),
    ).to_json()


RECORD_COLUMNS: dict[str, str] = {
    "point_id": "string",
    "variant_id": "string",
    "status": "string",
    "error": "string",
}
RUN_COLUMNS: dict[str, str] = {
    "recipe_hash": "string",
    "recipe_name": "string",
    "started_utc": "string",
    "duration_s": "Float64",
}


def columns() -> dict[str, str]:
    """Every ``load()`` column -> pandas dtype, in order: record ids and status, the point, every
    metric of ``METRICS``, the run. Derived from the schema, so a registered metric is a column."""
    return {**RECORD_COLUMNS, **POINT_COLUMNS, **{m.name: m.dtype for m in METRICS.values()}, **RUN_COLUMNS}


def record_row(rec: dict[str, Any]) -> dict[str, Any]:
    """One record as a ``columns()`` row."""
    m = rec.get("metrics") or {}
    row: dict[str, Any] = {k: rec.get(k) for k in RECORD_COLUMNS}
    row.update(point_row(rec["point"]))
    row.update({name: m.get(name) for name in METRICS})
    if row["env_key"] is None and rec.get("env"):
        row["env_key"] = fingerprint_key(rec["env"])
    row.update({k: rec.get(k) for k in RUN_COLUMNS})
    return row


# --------------------------------------------------------------------------------------------
# Older versions -> this one
# --------------------------------------------------------------------------------------------


def upgrade_record(rec: dict[str, Any], version: int) -> dict[str, Any]:
    """A record of schema ``version`` (``READABLE_VERSIONS``) in this version's form."""
    if version == SCHEMA_VERSION:
        return rec
    return upgrade_record_v1(rec) if version == 1 else upgrade_record_v2(rec)


def upgrade_baseline_points(points: dict[str, dict[str, Any]], version: int) -> dict[str, dict[str, Any]]:
    """Baseline entries of schema ``version`` (``READABLE_VERSIONS``) in this version's form."""
    if version == SCHEMA_VERSION:
        return points
    return upgrade_baseline_points_v1(points) if version == 1 else upgrade_baseline_points_v2(points)


# Version 2 (development builds of uhd-profile 0.2) -> version 3: ``pipeline.plan`` is ``drop``


def _drop_renamed(point: dict[str, Any]) -> dict[str, Any] | None:
    """``point`` with its pipeline's ``plan`` named ``drop``; None when it has no ``plan``."""
    pipe = point.get("pipeline")
    if not isinstance(pipe, dict) or "plan" not in pipe:
        return None
    return {**point, "pipeline": {("drop" if k == "plan" else k): v for k, v in pipe.items()}}


def upgrade_point_v2(point: dict[str, Any]) -> dict[str, Any]:
    """A version-2 point in the version-3 form: a pipeline's ``plan`` is ``drop``, ids recomputed.
    A point without an LLM is returned as it is (its form and id did not change)."""
    renamed = _drop_renamed(point)
    return point if renamed is None else Point.from_dict(renamed).to_dict()


def upgrade_record_v2(rec: dict[str, Any]) -> dict[str, Any]:
    """A version-2 record in the version-3 form (the point upgraded, its ids recomputed)."""
    point = upgrade_point_v2(rec["point"])
    out = {**rec, "point": point, "point_id": point["point_id"], "variant_id": point["variant_id"]}
    return Record.from_json({**out, "schema_version": SCHEMA_VERSION}).to_json()


def upgrade_baseline_points_v2(points: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Version-2 baseline entries keyed by their version-3 point ids (an entry with an LLM gets its
    point upgraded and its id recomputed; the others are unchanged)."""
    out: dict[str, dict[str, Any]] = {}
    for pid, entry in points.items():
        if isinstance(entry.get("point"), dict) and _drop_renamed(entry["point"]) is not None:
            point = upgrade_point_v2(entry["point"])
            entry, pid = {**entry, "point": point, "variant_id": point["variant_id"]}, point["point_id"]
        out[pid] = entry
    return out


# Version 1 (uhd-profile 0.1) -> version 3

_V1_METRIC_NAMES = {"paper": "paper_flops"}
_V1_DROPPED_METRICS = ("post_ratio",)  # now in the point


def upgrade_point_v1(point: dict[str, Any]) -> dict[str, Any]:
    """A version-1 point (``resolution: [H, W]``) in this version's form, ids recomputed."""
    s = dict(point["spec"])
    h, w = s.pop("resolution")
    s["width_px"], s["height_px"] = int(w), int(h)
    if "scale_resolution" in s:
        s["scale_resolution_px"] = s.pop("scale_resolution")
    point = {**point, "spec": s}
    return Point.from_dict(_drop_renamed(point) or point).to_dict()


def upgrade_record_v1(rec: dict[str, Any]) -> dict[str, Any]:
    """A version-1 record in this version's form (point ids recomputed, metric names updated)."""
    point = upgrade_point_v1(rec["point"])
    metrics = rec.get("metrics")
    if metrics is not None:
        metrics = {_V1_METRIC_NAMES.get(k, k): v for k, v in metrics.items() if k not in _V1_DROPPED_METRICS}
    out = {
        **rec,
        "point": point,
        "point_id": point["point_id"],
        "variant_id": point["variant_id"],
        "metrics": metrics,
        "schema_version": SCHEMA_VERSION,
    }
    return Record.from_json(out).to_json()


_V1_BASELINE_LATENCY = {
    "median_s": "latency_median_s",
    "p10_s": "latency_p10_s",
    "p90_s": "latency_p90_s",
    "iqr_over_median": "latency_iqr_over_median",
    "n": "latency_n",
    "samples_s": "latency_samples_s",
    "noise_flag": "noise_flag",
    "stop_reason": "stop_reason",
    "threads": "threads",
}


def upgrade_baseline_points_v1(points: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Version-1 baseline entries (``counts``/``latency``/``memory`` with their own names) as
    entries of this version (one ``metrics`` map named like the schema), keyed by recomputed point ids."""
    out: dict[str, dict[str, Any]] = {}
    for entry in points.values():
        metrics: dict[str, Any] = {}
        for k, v in (entry.get("counts") or {}).items():
            metrics[_V1_METRIC_NAMES.get(k, k)] = v
        for k, v in (entry.get("latency") or {}).items():
            if k in _V1_BASELINE_LATENCY:
                metrics[_V1_BASELINE_LATENCY[k]] = v
        metrics.update(entry.get("memory") or {})
        if not entry.get("point"):
            raise UhdProfileError(
                "a version-1 baseline entry has no point to recompute its id from; regenerate the "
                "baseline with `uhd-profile baseline RUN_DIR --out FILE`"
            )
        point = upgrade_point_v1(entry["point"])
        pid = point["point_id"]
        new = {k: v for k, v in entry.items() if k not in ("counts", "latency", "memory")}
        new.update(point=point, variant_id=point["variant_id"], metrics=metrics)
        out[pid] = new
    return out


def iter_metric_names(kind: str | None = None) -> Iterable[str]:
    """Metric names, all or of one ``kind``."""
    return (m.name for m in METRICS.values() if kind is None or m.kind == kind)


def markdown_table() -> str:
    """Every metric as a Markdown table (``docs/schema.md`` holds it; a test keeps them equal)."""
    lines = ["| metric | dtype | kind | gate | meaning |", "|---|---|---|---|---|"]
    for m in METRICS.values():
        lines.append(f"| `{m.name}` | {m.dtype} | {m.kind} | {m.gate or ''} | {m.doc} |")
    return "\n".join(lines)
