"""The results store: one append-only JSON-lines file per run directory.

``results.jsonl`` starts with a header line (schema, schema version, recipe hash and name); each
further line is one point's record, written whole, flushed and fsynced the moment it exists. A
sweep killed mid-write leaves at most a truncated last line, which the next open repairs (drops),
so a killed run loses at most the point in flight. ``recipe.toml`` beside it is the recipe as
written.

``load(run_dir)`` gives a pandas DataFrame, one row per point, with typed columns whose names carry
their units (``_s`` seconds, ``_bytes``, ``_j`` joules, ``_px`` pixels; FLOP counts are integers in
the convention their name gives: ``macs``, ``flops``, ``paper_flops``). Records, columns and dtypes
come from the record schema (``uhd_profile.measure.schema``). Runs written by schema version 1
(uhd-profile 0.1) are read too, upgraded in memory; only ``--resume`` into them is refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from uhd_profile.errors import UhdProfileError
from uhd_profile.measure.schema import SCHEMA_VERSION, columns, make_record, record_row, upgrade_record_v1
from uhd_profile.version import __version__

SCHEMA = "uhd-profile/results"
READABLE_VERSIONS = (1, SCHEMA_VERSION)
RESULTS_FILE = "results.jsonl"
RECIPE_FILE = "recipe.toml"

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "RECIPE_FILE",
    "RESULTS_FILE",
    "SCHEMA",
    "SCHEMA_VERSION",
    "ResultStore",
    "load",
    "make_record",
    "merge",
    "read_header",
    "records",
]


def _header(recipe_hash: str, recipe_name: str) -> dict:
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "recipe_hash": recipe_hash,
        "recipe_name": recipe_name,
        "uhd_profile_version": __version__,
    }


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
    if head.get("schema_version") not in READABLE_VERSIONS:
        raise UhdProfileError(
            f"{path}: schema version {head.get('schema_version')!r} is not supported; "
            f"this uhd-profile reads versions {', '.join(map(str, READABLE_VERSIONS))} "
            "(a newer uhd-profile wrote it: upgrade uhd-profile)"
        )
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

    def __init__(
        self, run_dir: str | os.PathLike, recipe_hash: str, recipe_name: str, recipe_text: str | None = None, resume: bool = False
    ):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / RESULTS_FILE
        self.recipe_hash, self.recipe_name = recipe_hash, recipe_name
        if self.path.exists():
            head = read_header(self.run_dir)
            if head.get("schema_version") != SCHEMA_VERSION:
                raise UhdProfileError(
                    f"{self.run_dir} holds schema-{head.get('schema_version')} results (an older uhd-profile); they are "
                    f"read as they are, but a sweep appends schema {SCHEMA_VERSION} only: convert it with "
                    f"`uhd-profile merge {self.run_dir} --out NEW_DIR`, or choose another --out"
                )
            if not resume:
                raise UhdProfileError(
                    f"{self.run_dir} already holds results of recipe {head.get('recipe_name')!r}; "
                    "add --resume to continue it, or choose another --out"
                )
            if head.get("recipe_hash") != recipe_hash:
                raise UhdProfileError(
                    f"{self.run_dir} holds recipe {head.get('recipe_name')!r} (hash {head.get('recipe_hash')}), "
                    f"not {recipe_name!r} (hash {recipe_hash}); --resume continues only the same recipe on the same "
                    "device kind: choose another --out"
                )
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
            raise UhdProfileError(
                f"record for {record.get('point_id')} belongs to recipe hash "
                f"{record.get('recipe_hash')}, this run directory to {self.recipe_hash}"
            )
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
    """The records of a run directory in the current schema (header checked; a torn last line
    ignored; schema-1 records upgraded in memory)."""
    head = read_header(run_dir)
    recs = _read_records(Path(run_dir, RESULTS_FILE))
    if head.get("schema_version") == 1:
        recs = [upgrade_record_v1(r) for r in recs]
    return recs


# --------------------------------------------------------------------------------------------
# DataFrame view
# --------------------------------------------------------------------------------------------


def load(run_dir: str | os.PathLike) -> pd.DataFrame:
    """A pandas DataFrame of a run directory's records: one row per point, typed columns, units in
    the names (``uhd_profile.measure.schema.columns()``: the record's ids and status, the point, every
    metric of the schema, the run). Failed points have their status and error and null metrics."""
    import pandas as pd  # only here: every command imports this module, few need pandas

    cols = columns()
    df = pd.DataFrame([record_row(r) for r in records(run_dir)], columns=list(cols))
    return df.astype(cols)


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
            raise UhdProfileError(
                f"{d} holds recipe {h['recipe_name']!r} (hash {h['recipe_hash']}), {first_dir} holds "
                f"{first['recipe_name']!r} (hash {first['recipe_hash']}); merge only shards of one recipe"
            )
    if Path(out_dir, RESULTS_FILE).exists():
        raise UhdProfileError(f"{out_dir} already holds results; merge into a new directory")
    seen: dict[str, str] = {}
    merged: list[dict] = []
    for d, _ in heads:
        for r in records(d):
            if r["point_id"] in seen:
                raise UhdProfileError(
                    f"duplicate point {r['point_id']} ({r['variant_id']}) in {seen[r['point_id']]} and {d}; "
                    "each point may come from one run directory only"
                )
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
