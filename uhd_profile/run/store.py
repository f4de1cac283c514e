"""The results store: one append-only JSON-lines file per run directory.

``results.jsonl`` starts with a header line (schema, schema version, recipe hash and name); each
further line is one point's record, written whole, flushed and fsynced the moment it exists. A
sweep killed mid-write leaves at most a truncated last line, which the next open repairs (drops),
so a killed run loses at most the point in flight. ``recipe.toml`` beside it is the recipe as
written.

``load(run_dir)`` gives a pandas DataFrame, one row per point, with typed columns whose names carry
their units (``_s`` seconds, ``_bytes``, ``_j`` joules, ``_px`` pixels; FLOP counts are integers in
the convention their name gives: ``macs``, ``flops``, ``paper_flops``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from uhd_profile.errors import UhdProfileError

SCHEMA = "uhd-profile/results"
SCHEMA_VERSION = 1
RESULTS_FILE = "results.jsonl"
RECIPE_FILE = "recipe.toml"
STATUSES = ("ok", "oom", "error", "skipped")


def make_record(point: dict, status: str, metrics: dict | None, error: str | None, env: dict, recipe_hash: str,
                recipe_name: str, started_utc: str, duration_s: float) -> dict:
    """One point's record (see ``STATUSES``); ``metrics`` is None unless the point ran."""
    if status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {STATUSES}")
    return {
        "schema_version": SCHEMA_VERSION, "point_id": point["point_id"], "variant_id": point["variant_id"],
        "point": point, "status": status, "error": error, "metrics": metrics, "env": env,
        "recipe_hash": recipe_hash, "recipe_name": recipe_name, "started_utc": started_utc,
        "duration_s": round(float(duration_s), 6),
    }


def _header(recipe_hash: str, recipe_name: str) -> dict:
    from uhd_profile import __version__

    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "recipe_hash": recipe_hash,
            "recipe_name": recipe_name, "uhd_profile_version": __version__}


def read_header(run_dir: str | os.PathLike) -> dict:
    """The run directory's header; a one-line error if it is missing or of another schema version."""
    path = Path(run_dir, RESULTS_FILE)
    if not path.is_file():
        raise UhdProfileError(f"{run_dir}: no {RESULTS_FILE} here; give a run directory written by `uhd-profile sweep`")
    with path.open("rb") as fh:
        first = fh.readline()
    try:
        head = json.loads(first)
    except json.JSONDecodeError:
        head = None
    if not isinstance(head, dict) or head.get("schema") != SCHEMA:
        raise UhdProfileError(f"{path}: the first line is not a {SCHEMA} header; this is not a uhd-profile results file")
    if head.get("schema_version") != SCHEMA_VERSION:
        raise UhdProfileError(f"{path}: schema version {head.get('schema_version')!r} is not supported; "
                              f"this uhd-profile reads version {SCHEMA_VERSION}")
    return head


def _read_records(path: Path, repair: bool = False) -> list[dict]:
    """Records after the header. A torn last line (no newline or not JSON: a write cut off by a
    kill) is dropped, and with ``repair`` cut from the file; a torn line elsewhere is an error."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    # lines[-1] is what follows the final newline: empty when the file ends cleanly
    body, tail = lines[1:-1], lines[-1]
    records: list[dict] = []
    good_end = len(lines[0]) + 1
    for i, line in enumerate(body):
        if not line.strip():
            good_end += len(line) + 1
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(body) - 1 and not tail:
                break  # the last full line is torn: treat like a torn tail
            raise UhdProfileError(f"{path}: line {i + 2} is not valid JSON; the file was edited or corrupted") from None
        good_end += len(line) + 1
    if repair and good_end < len(data):
        with path.open("r+b") as fh:
            fh.truncate(good_end)
            fh.flush()
            os.fsync(fh.fileno())
    return records


class ResultStore:
    """Append-only results of one run directory (see module docstring).

    A new store refuses a directory that already holds results unless ``resume``; a resumed one
    refuses a directory written for another recipe (a different point set).
    """

    def __init__(self, run_dir: str | os.PathLike, recipe_hash: str, recipe_name: str, recipe_text: str | None = None,
                 resume: bool = False):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / RESULTS_FILE
        self.recipe_hash, self.recipe_name = recipe_hash, recipe_name
        if self.path.exists():
            head = read_header(self.run_dir)
            if not resume:
                raise UhdProfileError(f"{self.run_dir} already holds results of recipe {head.get('recipe_name')!r}; "
                                      "add --resume to continue it, or choose another --out")
            if head.get("recipe_hash") != recipe_hash:
                raise UhdProfileError(
                    f"{self.run_dir} holds recipe {head.get('recipe_name')!r} (hash {head.get('recipe_hash')}), "
                    f"not {recipe_name!r} (hash {recipe_hash}); --resume continues only the same recipe on the same "
                    "device kind: choose another --out")
            self._records = _read_records(self.path, repair=True)
        else:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._write_atomic(self.path, json.dumps(_header(recipe_hash, recipe_name), sort_keys=True) + "\n")
            self._records = []
        if recipe_text is not None and not (self.run_dir / RECIPE_FILE).exists():
            self._write_atomic(self.run_dir / RECIPE_FILE, recipe_text)
        self._ids = {r["point_id"] for r in self._records}

    @staticmethod
    def _write_atomic(path: Path, text: str) -> None:
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def append(self, record: dict) -> None:
        """Write one record, whole, flushed and fsynced; a point already recorded is refused."""
        if record.get("recipe_hash") != self.recipe_hash:
            raise UhdProfileError(f"record for {record.get('point_id')} belongs to recipe hash "
                                  f"{record.get('recipe_hash')}, this run directory to {self.recipe_hash}")
        pid = record["point_id"]
        if pid in self._ids:
            raise UhdProfileError(f"point {pid} ({record.get('variant_id')}) is already recorded in {self.path}")
        line = json.dumps(record, sort_keys=True, allow_nan=True, default=str) + "\n"
        with self.path.open("ab") as fh:  # one write of one line: append-only
            fh.write(line.encode())
            fh.flush()
            os.fsync(fh.fileno())
        self._records.append(record)
        self._ids.add(pid)

    def records(self) -> list[dict]:
        return list(self._records)

    def completed_ids(self) -> set[str]:
        """Points with a record (any status): a resumed sweep does not run them again."""
        return set(self._ids)


def records(run_dir: str | os.PathLike) -> list[dict]:
    """The raw records of a run directory (header checked; a torn last line ignored)."""
    read_header(run_dir)
    return _read_records(Path(run_dir, RESULTS_FILE))


# --------------------------------------------------------------------------------------------
# DataFrame view
# --------------------------------------------------------------------------------------------

#: column -> pandas dtype, in order. Units are in the names.
COLUMNS: dict[str, str] = {
    "point_id": "string", "variant_id": "string", "status": "string", "error": "string",
    "encoder": "string", "resolution_h_px": "Int64", "resolution_w_px": "Int64", "encoding": "string",
    "packing": "string", "max_slices": "Int64", "scale_resolution_px": "Int64", "compressor": "string", "depth": "Int64", "post_ratio": "Int64", "tokens_in": "Int64", "tokens_llm": "Int64",
    "params": "Int64",
    "measure": "string", "dtype": "string", "batch": "Int64", "device": "string",
    "macs": "Int64", "flops": "Int64", "paper_flops": "Int64",
    "latency_median_s": "Float64", "latency_p10_s": "Float64", "latency_p90_s": "Float64",
    "latency_iqr_over_median": "Float64", "latency_n": "Int64", "latency_samples_s": "object",
    "noise_flag": "string", "stop_reason": "string",
    "peak_mem_bytes": "Int64", "activation_mem_bytes": "Int64", "weights_bytes": "Int64",
    "energy_per_image_j": "Float64", "throttled_fraction": "Float64",
    "achieved_flops_per_s": "Float64", "mfu": "Float64", "threads": "Int64",
    "recipe_hash": "string", "recipe_name": "string", "started_utc": "string", "duration_s": "Float64",
    "env_key": "string",
}


def _row(rec: dict) -> dict:
    p, m = rec["point"], rec.get("metrics") or {}
    s = p["spec"]
    row = {
        "point_id": rec["point_id"], "variant_id": rec["variant_id"], "status": rec["status"], "error": rec.get("error"),
        "encoder": s["encoder"], "resolution_h_px": s["resolution"][0], "resolution_w_px": s["resolution"][1],
        "encoding": s.get("encoding", "view"), "packing": s.get("packing", "batched"),
        "max_slices": s.get("max_slices", 9), "scale_resolution_px": s.get("scale_resolution", 448),
        "compressor": s["compressor"], "depth": s["depth"],
        "post_ratio": s["post_ratio"], "measure": "+".join(p["measure"]), "dtype": p["dtype"], "batch": p["batch"],
        "device": p["device"], "paper_flops": m.get("paper"),
        "recipe_hash": rec.get("recipe_hash"), "recipe_name": rec.get("recipe_name"),
        "started_utc": rec.get("started_utc"), "duration_s": rec.get("duration_s"),
    }
    for col in COLUMNS:
        if col not in row:
            row[col] = m.get(col)
    if row["env_key"] is None and rec.get("env"):
        from uhd_profile.measure.env import fingerprint_key

        row["env_key"] = fingerprint_key(rec["env"])
    return row


def load(run_dir: str | os.PathLike):
    """A pandas DataFrame of a run directory's records: one row per point, typed columns, units in
    the names (see ``COLUMNS``). Failed points have their status and error and null metrics."""
    import pandas as pd

    rows = [_row(r) for r in records(run_dir)]
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    return df.astype(COLUMNS)


# --------------------------------------------------------------------------------------------
# Merge
# --------------------------------------------------------------------------------------------


def merge(run_dirs: list[str], out_dir: str) -> int:
    """Combine run directories of one recipe (e.g. shards) into ``out_dir``; returns the record
    count. Refuses mismatched recipes, a point recorded twice, and an ``out_dir`` holding results."""
    if not run_dirs:
        raise UhdProfileError("merge needs at least one run directory")
    heads = [(d, read_header(d)) for d in run_dirs]
    first_dir, first = heads[0]
    for d, h in heads[1:]:
        if h["recipe_hash"] != first["recipe_hash"]:
            raise UhdProfileError(f"{d} holds recipe {h['recipe_name']!r} (hash {h['recipe_hash']}), {first_dir} holds "
                                  f"{first['recipe_name']!r} (hash {first['recipe_hash']}); merge only shards of one recipe")
    if Path(out_dir, RESULTS_FILE).exists():
        raise UhdProfileError(f"{out_dir} already holds results; merge into a new directory")
    seen: dict[str, str] = {}
    merged: list[dict] = []
    for d, _ in heads:
        for r in records(d):
            if r["point_id"] in seen:
                raise UhdProfileError(f"duplicate point {r['point_id']} ({r['variant_id']}) in {seen[r['point_id']]} and {d}; "
                                      "each point may come from one run directory only")
            seen[r["point_id"]] = d
            merged.append(r)
    recipe_text = None
    src = Path(first_dir, RECIPE_FILE)
    if src.exists():
        recipe_text = src.read_text()
    store = ResultStore(out_dir, first["recipe_hash"], first["recipe_name"], recipe_text=recipe_text)
    for r in merged:
        store.append(r)
    return len(merged)
