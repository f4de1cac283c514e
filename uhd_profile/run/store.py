"""The results store: one append-only JSON-lines file per run directory.

``results.jsonl`` starts with a header line (schema, schema version, recipe hash and name); each
further line is one point's record, written whole, flushed and fsynced the moment it exists. A
sweep killed mid-write leaves at most a truncated last line, which the next ``--resume`` cuts
(under the directory's writer lock, ``uhd_profile.run.lock``), so a killed run loses at most the
point in flight; a write that fails (a full disk) is undone at once. Every reader reports a torn
or corrupt line in one line (``PartialRunWarning``), or refuses the run (``PartialRunError``) where
it needs every record. ``recipe.toml`` beside it is the recipe as written.

``load(run_dir)`` gives a pandas DataFrame, one row per point, with typed columns whose names carry
their units (``_s`` seconds, ``_bytes``, ``_j`` joules, ``_px`` pixels; FLOP counts are integers in
the convention their name gives: ``macs``, ``flops``, ``paper_flops``). Records, columns and dtypes
come from the record schema (``uhd_profile.measure.schema``). Runs written by schema version 1
(uhd-profile 0.1) or 2 (development builds of 0.2) are read too, upgraded in memory; only
``--resume`` into them is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from uhd_profile.errors import UhdProfileError
from uhd_profile.files import atomic_write_text, check_output_dir, output_error
from uhd_profile.measure.schema import READABLE_VERSIONS, SCHEMA_VERSION, columns, make_record, record_row, upgrade_record
from uhd_profile.run.lock import RunLock, active_writer
from uhd_profile.version import __version__

SCHEMA = "uhd-profile/results"
RESULTS_FILE = "results.jsonl"
RECIPE_FILE = "recipe.toml"

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "RECIPE_FILE",
    "RESULTS_FILE",
    "SCHEMA",
    "SCHEMA_VERSION",
    "LineIssue",
    "PartialRunError",
    "PartialRunWarning",
    "ResultStore",
    "load",
    "make_record",
    "merge",
    "read_header",
    "read_run",
    "records",
]


def _header(recipe_hash: str, recipe_name: str, dtype_auto: dict | None = None) -> dict:
    head = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "recipe_hash": recipe_hash,
        "recipe_name": recipe_name,
        "uhd_profile_version": __version__,
    }
    if dtype_auto is not None:  # what the recipe's dtype "auto" resolved to: a resumed run reuses it
        head["dtype_auto"] = dtype_auto
    return head


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


@dataclass(frozen=True)
class LineIssue:
    """A line of a results file that is not a whole record: ``torn`` (the file's last line, cut off
    by a kill or a full disk: no final newline, or not JSON) or ``corrupt`` (a line before the last
    that is not a JSON record: the file was edited or damaged). ``line`` is 1-based."""

    path: str
    line: int
    kind: str
    nbytes: int

    def describe(self) -> str:
        if self.kind == "torn":
            return f"line {self.line} is torn ({self.nbytes} bytes, not a whole record: a write cut off by a kill or a full disk)"
        return f"line {self.line} is not a valid JSON record (the file was edited or corrupted)"


class PartialRunError(UhdProfileError):
    """A reader that needs every record (``baseline``, ``merge``) met a torn or corrupt line."""


class PartialRunWarning(UserWarning):
    """A reader skipped a torn or corrupt line (one line naming the file and the line)."""


def issues_message(path: str | os.PathLike, issues: list[LineIssue], readable: int) -> str:
    """One line: the file, each bad line (the first three), and how many records were readable."""
    parts = "; ".join(i.describe() for i in issues[:3])
    if len(issues) > 3:
        parts += f"; and {len(issues) - 3} more"
    return f"{path}: {parts}; {readable} readable record{'s' if readable != 1 else ''}"


@dataclass
class _Scan:
    records: list[dict]
    issues: list[LineIssue]
    good_end: int  # bytes up to the end of the last whole record (what a repair keeps)
    size: int
    in_flight: bool  # a final line without a newline that a live writer is still writing


def _scan(path: Path, own_lock: bool = False) -> _Scan:
    """Records after the header, and every line that is not a whole record. A final line without a
    newline is a write in flight, not an issue, while a live writer holds the directory's lock
    (``own_lock``: the caller holds it, so nobody else is writing and such a line is torn)."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    # lines[-1] is what follows the final newline: empty when the file ends cleanly
    body, tail = lines[1:-1], lines[-1]
    records: list[dict] = []
    issues: list[LineIssue] = []
    offset = good_end = len(lines[0]) + 1
    for i, line in enumerate(body):
        offset += len(line) + 1
        if not line.strip():
            if not issues:
                good_end = offset
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            rec = None
        if not isinstance(rec, dict) or "point_id" not in rec:
            last = i == len(body) - 1 and not tail.strip()
            issues.append(LineIssue(str(path), i + 2, "torn" if last else "corrupt", len(line)))
            continue
        records.append(rec)
        if not issues:
            good_end = offset
    in_flight = False
    if tail.strip():
        writer = None if own_lock else active_writer(path.parent)
        if writer is not None and writer.pid != os.getpid():  # this process appends whole lines only
            in_flight = True
        else:
            issues.append(LineIssue(str(path), len(lines), "torn", len(tail)))
    return _Scan(records, issues, good_end, len(data), in_flight)


def _repair(path: Path, scan: _Scan) -> list[LineIssue]:
    """Cut a torn last line (the writer's lock held): what a killed sweep left. A corrupt line
    before it is refused: cutting there would drop whole records."""
    corrupt = [i for i in scan.issues if i.kind == "corrupt"]
    if corrupt:
        raise PartialRunError(
            issues_message(path, scan.issues, len(scan.records))
            + "; a sweep does not append to a damaged file: copy its readable records with "
            f"`uhd-profile merge {path.parent} --out NEW_DIR --allow-partial` and resume that"
        )
    if scan.good_end < scan.size:
        with path.open("r+b") as fh:
            fh.truncate(scan.good_end)
            fh.flush()
            os.fsync(fh.fileno())
    return list(scan.issues)


class ResultStore:
    """Append-only results of one run directory (see module docstring).

    A new store refuses a directory that already holds results unless ``resume``; a resumed one
    refuses a directory written for another recipe (a different point set). The store holds the
    directory's writer lock (``uhd_profile.run.lock``) from construction to ``close()``; a torn last
    line is cut under that lock and listed in ``repaired``.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        recipe_hash: str,
        recipe_name: str,
        recipe_text: str | None = None,
        resume: bool = False,
        purpose: str = "sweep",
        dtype_auto: dict | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.dtype_auto = dtype_auto
        self.path = self.run_dir / RESULTS_FILE
        self.recipe_hash, self.recipe_name = recipe_hash, recipe_name
        self.repaired: list[LineIssue] = []
        self._lock: RunLock | None = RunLock(self.run_dir, purpose, what="--out").acquire()
        try:
            self._open(recipe_text, resume)
        except BaseException:
            self.close()
            raise

    def _open(self, recipe_text: str | None, resume: bool) -> None:
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
            if head.get("dtype_auto") != self.dtype_auto and head.get("recipe_hash") == self.recipe_hash:
                raise UhdProfileError(
                    f"{self.run_dir} was run with dtype auto = {head.get('dtype_auto')}, this sweep has "
                    f"{self.dtype_auto}; resume with the recorded choice (`uhd-profile sweep --resume` reads it)"
                )
            if head.get("recipe_hash") != self.recipe_hash:
                raise UhdProfileError(
                    f"{self.run_dir} holds recipe {head.get('recipe_name')!r} (hash {head.get('recipe_hash')}), "
                    f"not {self.recipe_name!r} (hash {self.recipe_hash}); --resume continues only the same recipe on the same "
                    "device kind: choose another --out"
                )
            scan = _scan(self.path, own_lock=True)
            self.repaired = _repair(self.path, scan)
            self._records = scan.records
        else:
            atomic_write_text(
                self.path,
                json.dumps(_header(self.recipe_hash, self.recipe_name, self.dtype_auto), sort_keys=True) + "\n",
                what="--out",
            )
            self._records = []
        if recipe_text is not None and not (self.run_dir / RECIPE_FILE).exists():
            atomic_write_text(self.run_dir / RECIPE_FILE, recipe_text, what="--out")
        self._ids = {r["point_id"] for r in self._records}

    def close(self) -> None:
        """Let the run directory's writer lock go (appending after this is refused)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # a store dropped without close() must not keep the directory locked
        with contextlib.suppress(Exception):
            self.close()

    def append(self, record: dict) -> None:
        """Write one record, whole, flushed and fsynced; a point already recorded is refused. A write
        that fails (a full disk) is undone, so the file still ends on a whole record, and raised as
        a one-line ``WriteError``."""
        if self._lock is None:
            raise UhdProfileError(f"{self.path}: this store is closed; open the run directory again to append")
        if record.get("recipe_hash") != self.recipe_hash:
            raise UhdProfileError(
                f"record for {record.get('point_id')} belongs to recipe hash "
                f"{record.get('recipe_hash')}, this run directory to {self.recipe_hash}"
            )
        pid = record["point_id"]
        if pid in self._ids:
            raise UhdProfileError(f"point {pid} ({record.get('variant_id')}) is already recorded in {self.path}")
        data = (json.dumps(record, sort_keys=True, allow_nan=True, default=str) + "\n").encode()
        kept = f"the {len(self._records)} records written before are intact"
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except OSError as exc:
            raise output_error(exc, self.path, "results", kept) from None
        try:
            size = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:  # one line, appended whole; a short write continues (and meets ENOSPC)
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except OSError as exc:
                with contextlib.suppress(OSError):  # undo the part written; else the next --resume cuts it
                    os.ftruncate(fd, size)
                    os.fsync(fd)
                raise output_error(exc, self.path, "results", kept) from None
        finally:
            os.close(fd)
        self._records.append(record)
        self._ids.add(pid)

    def records(self) -> list[dict]:
        return list(self._records)

    def completed_ids(self) -> set[str]:
        """Points with a record (any status): a resumed sweep does not run them again."""
        return set(self._ids)


def read_run(run_dir: str | os.PathLike) -> tuple[dict, list[dict], list[LineIssue]]:
    """The header, the records in the current schema (older records upgraded in memory) and the
    lines that are not whole records (see ``LineIssue``), without judging them."""
    head = read_header(run_dir)
    scan = _scan(Path(run_dir, RESULTS_FILE))
    recs = scan.records
    if head.get("schema_version") != SCHEMA_VERSION:
        recs = [upgrade_record(r, head["schema_version"]) for r in recs]
    return head, recs, scan.issues


def records(run_dir: str | os.PathLike, allow_partial: bool = True) -> list[dict]:
    """The records of a run directory in the current schema (header checked; older records
    upgraded in memory). A torn or corrupt line is skipped with a one-line ``PartialRunWarning``
    naming the file and the line, or, when not ``allow_partial``, refused (``PartialRunError``)."""
    _, recs, issues = read_run(run_dir)
    _judge(run_dir, recs, issues, allow_partial)
    return recs


def _judge(run_dir: str | os.PathLike, recs: list[dict], issues: list[LineIssue], allow_partial: bool) -> None:
    if issues:
        msg = issues_message(Path(run_dir, RESULTS_FILE), issues, len(recs))
        if not allow_partial:
            raise PartialRunError(msg + "; --allow-partial uses the readable records only")
        warnings.warn(msg, PartialRunWarning, stacklevel=3)  # at the caller of records() / load()


# --------------------------------------------------------------------------------------------
# DataFrame view
# --------------------------------------------------------------------------------------------


def load(run_dir: str | os.PathLike, allow_partial: bool = True) -> pd.DataFrame:
    """A pandas DataFrame of a run directory's records: one row per point, typed columns, units in
    the names (``uhd_profile.measure.schema.columns()``: the record's ids and status, the point, every
    metric of the schema, the run). Failed points have their status and error and null metrics.
    A torn or corrupt line is skipped with a ``PartialRunWarning`` (refused unless ``allow_partial``)."""
    import pandas as pd  # only here: every command imports this module, few need pandas

    cols = columns()
    _, recs, issues = read_run(run_dir)
    _judge(run_dir, recs, issues, allow_partial)
    df = pd.DataFrame([record_row(r) for r in recs], columns=list(cols))
    return df.astype(cols)


# --------------------------------------------------------------------------------------------
# Merge
# --------------------------------------------------------------------------------------------


def merge(run_dirs: list[str], out_dir: str, allow_partial: bool = False) -> int:
    """Combine run directories of one recipe (e.g. shards) into ``out_dir``; returns the record
    count. Refuses mismatched recipes, a point recorded twice, an ``out_dir`` holding results, and a
    torn or corrupt line in any input unless ``allow_partial`` (then its readable records are
    merged, with a ``PartialRunWarning``). ``out_dir`` is locked while written, and its results file
    is written whole (a temporary file, fsynced, renamed): it exists complete or not at all."""
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
    out = check_output_dir(out_dir, "--out")
    if Path(out, RESULTS_FILE).exists():
        raise UhdProfileError(f"{out_dir} already holds results; merge into a new directory")
    seen: dict[str, str] = {}
    merged: list[dict] = []
    for d, _ in heads:
        for r in records(d, allow_partial):
            if r["point_id"] in seen:
                raise UhdProfileError(
                    f"duplicate point {r['point_id']} ({r['variant_id']}) in {seen[r['point_id']]} and {d}; "
                    "each point may come from one run directory only"
                )
            seen[r["point_id"]] = d
            merged.append(r)
    src = Path(first_dir, RECIPE_FILE)
    recipe_text = src.read_text() if src.exists() else None
    with RunLock(out, "merge", what="--out"):
        if Path(out, RESULTS_FILE).exists():  # written meanwhile by another process
            raise UhdProfileError(f"{out_dir} already holds results; merge into a new directory")
        lines = [json.dumps(_header(first["recipe_hash"], first["recipe_name"], first.get("dtype_auto")), sort_keys=True)]
        lines += [json.dumps(r, sort_keys=True, allow_nan=True, default=str) for r in merged]
        atomic_write_text(out / RESULTS_FILE, "\n".join(lines) + "\n", what="--out", kept="nothing was merged")
        if recipe_text is not None:
            atomic_write_text(out / RECIPE_FILE, recipe_text, what="--out", kept=f"the merged {RESULTS_FILE} is complete")
    return len(merged)
