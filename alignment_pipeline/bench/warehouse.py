"""Warehouse benchmark: paper-scale alignment samples through the real build, load and named queries.

Synthesises sandbox interactions (texts, neighbour feedback, observer scores) whose samples come out at the
paper's proportions (imitation 48.8k : self-critique 94.6k : realignment 25.6k), writes them to the sandbox
tables of a temporary DuckDB file, runs `build_samples` held to the paper's split, times every named query, and
loads the same rows the two slower ways side by side: row-by-row inserts (executemany in one transaction, as
pandas-style row writers do) and the original code's JSON file rewritten whole on a save.

Peak memory is the process's peak resident set size (VmHWM) during build+load, reset just before it through
/proc/self/clear_refs; where that is not available, the growth of resource.getrusage's ru_maxrss. Either way it
counts DuckDB's and Arrow's native memory, which tracemalloc would not see.
"""

from __future__ import annotations

import json
import resource
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

from alignment_pipeline.samples.build import SAMPLE_COLUMNS, SamplesReport, build_samples
from alignment_pipeline.samples.config import PAPER_TYPE_COUNTS, SamplesConfig
from alignment_pipeline.samples.scripted import insert_sandbox_frames
from alignment_pipeline.warehouse.db import Warehouse

QUERY_GOAL_S = 0.100
BUILD_LOAD_GOAL_S = 5.0
BENCH_BATCH = "bench"

# Synthetic mix: 8 of 10 interactions are realignment-eligible; 1 does not improve (half of those leave the
# draft unchanged: an imitation duplicate); 1 has an unparseable revision score (NULL). 4 neighbours each;
# one feedback in 25 unparseable (NULL) and one in 50 interactions repeats a neighbour's words (a duplicate).
_NEIGHBOURS = 4
_AGENT_MODELS = ("text-davinci-002", "text-davinci-003", "gpt-4")
_MODEL_WEIGHTS = (72.7, 32.1, 64.2)  # the paper's samples per agent model (k)
_WORDS = (
    "people should always respect others and avoid harm while being honest about what they know and do not "
    "know it is important to consider the feelings of everyone involved and to offer help that is safe fair "
    "and useful rather than advice that could hurt someone or spread bias against any group in society the "
    "best answer explains the reasons clearly kindly and without judgement and suggests asking an expert"
).split()


@dataclass(frozen=True)
class QueryTiming:
    name: str
    rows: int
    first_s: float
    median_s: float
    median_cpu_s: float  # process CPU time (all threads) of the median run
    error: str | None = None

    @property
    def within_goal(self) -> bool:
        return self.error is None and self.median_s < QUERY_GOAL_S


@dataclass(frozen=True)
class WarehouseBench:
    """Figures of one benchmark run (seconds unless named otherwise)."""

    n_target: int
    interactions: int
    feedback_rows: int
    synth_s: float
    sandbox_load_s: float
    report: SamplesReport
    build_load_cpu_s: float  # process CPU time (all threads) during build+load
    peak_rss_mib: float
    baseline_rss_mib: float
    memory_method: str
    queries: list[QueryTiming]
    row_insert_s: float | None = None
    json_save_s: float | None = None
    json_bytes: int | None = None

    @property
    def samples(self) -> int:
        return self.report.total

    @property
    def build_load_s(self) -> float:
        return self.report.build_s + self.report.load_s

    def metadata(self) -> dict:
        return {
            "n_target": self.n_target, "samples": self.samples, "interactions": self.interactions,
            "feedback_rows": self.feedback_rows, "synth_s": round(self.synth_s, 3),
            "sandbox_load_s": round(self.sandbox_load_s, 3), "build_s": round(self.report.build_s, 3),
            "load_s": round(self.report.load_s, 3), "build_load_s": round(self.build_load_s, 3),
            "build_load_within_goal": self.build_load_s < BUILD_LOAD_GOAL_S,
            "build_load_cpu_s": round(self.build_load_cpu_s, 3),
            "peak_rss_mib": round(self.peak_rss_mib, 1), "baseline_rss_mib": round(self.baseline_rss_mib, 1),
            "memory_method": self.memory_method,
            "queries": {q.name: {"rows": q.rows, "first_s": round(q.first_s, 4), "median_s": round(q.median_s, 4),
                                 "median_cpu_s": round(q.median_cpu_s, 4), "error": q.error}
                        for q in self.queries},
            "row_insert_s": None if self.row_insert_s is None else round(self.row_insert_s, 3),
            "json_save_s": None if self.json_save_s is None else round(self.json_save_s, 3),
            "json_bytes": self.json_bytes,
            "type_counts": dict(self.report.counts),
        }

    def lines(self) -> list[str]:
        r = self.report
        out = [
            f"synthesised {self.interactions:,} interactions + {self.feedback_rows:,} feedback rows in "
            f"{self.synth_s:.2f} s; written to the sandbox tables in {self.sandbox_load_s:.2f} s",
            f"samples: {self.samples:,} (target {self.n_target:,}) = " + ", ".join(
                f"{t} {n:,} ({s:.1%})" for (t, n), s in zip(r.counts.items(), r.type_shares().values(), strict=True)),
            f"dropped: duplicates {sum(r.dropped_duplicates.values()):,}, NULL-rated "
            f"{sum(r.excluded_null.values()):,}, sampled out {sum(r.sampled_out.values()):,}; realignment "
            f"eligible {r.realignment['eligible']:,} of {r.realignment['interactions']:,} interactions",
            f"build {r.build_s:.3f} s + load {r.load_s:.3f} s = {self.build_load_s:.3f} s "
            f"(goal < {BUILD_LOAD_GOAL_S:.0f} s: {'met' if self.build_load_s < BUILD_LOAD_GOAL_S else 'MISSED'}); "
            f"process CPU time {self.build_load_cpu_s:.3f} s (all threads; wall above CPU means waiting for a core "
            f"or the disk)",
            f"peak memory during build+load: {self.peak_rss_mib:,.0f} MiB resident "
            f"(from {self.baseline_rss_mib:,.0f} MiB before; {self.memory_method})",
        ]
        for q in self.queries:
            if q.error:
                out.append(f"query {q.name:<28} ERROR {q.error}")
            else:
                out.append(f"query {q.name:<28} {q.median_s * 1000:7.1f} ms median of 3 ({q.median_cpu_s * 1000:.1f} ms"
                           f" CPU; first run {q.first_s * 1000:.1f} ms), {q.rows:,} rows"
                           f"{'' if q.within_goal else '  (goal < 100 ms MISSED)'}")
        if self.row_insert_s is not None and self.json_save_s is not None:
            out.append(
                f"same {self.samples:,} rows, side by side: DuckDB insert-select {r.load_s:.3f} s | "
                f"row inserts (executemany, one transaction) {self.row_insert_s:.3f} s "
                f"({self.row_insert_s / max(r.load_s, 1e-9):.0f}x) | one JSON file save "
                f"{self.json_save_s:.3f} s, {self.json_bytes / 2**20:.0f} MiB (the original rewrote it on every save)")
        missed = (["build+load"] if self.build_load_s >= BUILD_LOAD_GOAL_S else []) + [
            q.name for q in self.queries if not q.within_goal]
        slowest = max((q for q in self.queries if not q.error), key=lambda q: q.median_s, default=None)
        slowest_text = f"{slowest.name} {slowest.median_s * 1000:.0f} ms" if slowest else "none"
        out.append(
            f"SUMMARY {self.samples:,} samples: build+load {self.build_load_s:.2f} s ({self.build_load_cpu_s:.2f} s "
            f"CPU), slowest query {slowest_text}, peak {self.peak_rss_mib:,.0f} MiB; goals "
            + ("met" if not missed else "missed: " + ", ".join(missed)))
        return out


def bench_warehouse(*, n: int = 169_000, compare: bool = True, workdir: str | Path | None = None,
                    seed: int = 0) -> WarehouseBench:
    """Run the benchmark at about `n` samples in a temporary DuckDB (under `workdir` if given) and return its
    figures. compare=True also times the row-insert and JSON-file loads of the same rows."""
    if n < 100:
        raise ValueError(f"bench_warehouse: n={n} is too small; use at least 100 samples")
    with tempfile.TemporaryDirectory(prefix="bench-warehouse-", dir=workdir) as tmp:
        warehouse = Warehouse(Path(tmp) / "bench.duckdb")
        warehouse.migrate()
        config = SamplesConfig(type_shares=dict(PAPER_TYPE_COUNTS))  # the paper's split, at its scale

        t0 = time.perf_counter()
        interactions, feedback, scores = synthesise_sandbox(n, seed=seed)
        feedback_rows = feedback.height
        t1 = time.perf_counter()
        with warehouse.transaction() as con:
            con.execute("SET enable_progress_bar = false")
            insert_sandbox_frames(con, interactions, feedback, scores)
        t2 = time.perf_counter()
        del interactions, feedback, scores

        memory = _PeakMemory()
        cpu_start = _cpu_s()
        report = build_samples(warehouse, BENCH_BATCH, config, now=datetime(2024, 1, 1))
        build_load_cpu_s = _cpu_s() - cpu_start
        peak, baseline, method = memory.stop()

        queries = time_named_queries(warehouse)
        row_insert_s = json_save_s = json_bytes = None
        if compare:
            row_insert_s = _time_row_inserts(warehouse, Path(tmp))
            json_save_s, json_bytes = _time_json_save(warehouse, Path(tmp))
    return WarehouseBench(
        n_target=n, interactions=report.interactions, feedback_rows=feedback_rows, synth_s=t1 - t0,
        sandbox_load_s=t2 - t1, report=report, build_load_cpu_s=build_load_cpu_s, peak_rss_mib=peak,
        baseline_rss_mib=baseline, memory_method=method, queries=queries, row_insert_s=row_insert_s,
        json_save_s=json_save_s, json_bytes=json_bytes)


def synthesise_sandbox(n: int, *, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Frames for sandbox_interactions, sandbox_feedback and scored_revisions from which the paper profile
    builds about `n` samples. Vectorised: numpy picks words and ratings, polars joins them into text."""
    rng = np.random.default_rng(seed)
    shares = {t: c / sum(PAPER_TYPE_COUNTS.values()) for t, c in PAPER_TYPE_COUNTS.items()}
    # Imitation is the scarcest type per interaction (realignment yields a row per feedback), so it sets how
    # many interactions are needed: each gives its draft and its revision, less the revision where its score is
    # NULL (kind 9) or where it repeats the draft (idx % 20 == 8); the others are cut down to the paper's split.
    target = round(n * shares["imitation"])
    per_row = 2 - (np.arange(4 * target + 20) % 10 == 9) - (np.arange(4 * target + 20) % 20 == 8)
    count = int(np.searchsorted(np.cumsum(per_row), target) + 1)
    idx = np.arange(count)
    kind = idx % 10  # 0..7 eligible, 8 not improved, 9 NULL revision score
    before = np.round(rng.uniform(1.0, 4.0, count), 2)
    gain = rng.uniform(0.5, 3.0, count)
    after = np.where(kind < 8, np.clip(np.maximum(before + gain, 4.1 + gain / 3), None, 7.0),
                     np.clip(before - gain / 2, 1.0, None))
    after = np.round(after, 2)
    model_idx = rng.choice(len(_AGENT_MODELS), size=count, p=np.array(_MODEL_WEIGHTS) / sum(_MODEL_WEIGHTS))
    agent_id, round_, world = idx % 100, (idx // 100) % 10, idx // 1000

    question = _text(rng, count, 18, "Question " + pl.Series(idx).cast(pl.String) + ":")
    draft = _text(rng, count, 60, "Draft " + pl.Series(idx).cast(pl.String) + ":")
    revision = _text(rng, count, 70, "Revised " + pl.Series(idx).cast(pl.String) + ":")
    unchanged = pl.Series(idx % 20 == 8)  # half of the not-improved interactions keep their draft
    revision = pl.select(pl.when(unchanged).then(draft).otherwise(revision)).to_series()

    ids = "bench-" + pl.Series(idx).cast(pl.String)
    interactions = pl.DataFrame({
        "interaction_id": ids, "world_id": "world-" + pl.Series(world).cast(pl.String), "batch": BENCH_BATCH,
        "round": pl.Series(round_, dtype=pl.Int32), "agent_id": pl.Series(agent_id, dtype=pl.Int32),
        "agent_model": pl.Series(np.array(_AGENT_MODELS)[model_idx]),
        "prompt_id": "prompt-" + pl.Series(idx // 2).cast(pl.String), "question": question, "draft": draft,
        "revision": revision,
        "neighbour_ids": pl.Series((agent_id[:, None] + np.arange(1, _NEIGHBOURS + 1)) % 100)
        .cast(pl.List(pl.Int32)),
        "created_at": pl.Series(np.datetime64("2024-01-01T00:00:00", "us") + idx.astype("timedelta64[ms]")),
    })

    fb_count = count * _NEIGHBOURS
    fb_idx = np.arange(fb_count)
    owner, position = fb_idx // _NEIGHBOURS, fb_idx % _NEIGHBOURS
    rating = np.round(rng.uniform(1.0, 7.0, fb_count), 2)
    # lowest rating shown last, as the sandbox orders feedback
    rating = -np.sort(-rating.reshape(count, _NEIGHBOURS), axis=1).reshape(-1)
    rating_f = pl.Series(rating).set(pl.Series(fb_idx % 25 == 3), None)
    text = _text(rng, fb_count, 30, "Feedback " + pl.Series(fb_idx).cast(pl.String) + ":")
    repeat = pl.Series((owner % 50 == 1) & (position == 1))  # repeats position 0's words
    text = pl.select(pl.when(repeat).then(text.shift(1)).otherwise(text)).to_series()
    feedback = pl.DataFrame({
        "interaction_id": ids.gather(owner), "position": pl.Series(position, dtype=pl.Int32),
        "neighbour_id": pl.Series((agent_id[owner] + position + 1) % 100, dtype=pl.Int32),
        "neighbour_model": pl.Series(np.array(_AGENT_MODELS)[model_idx[(owner + position + 1) % count]]),
        "feedback": text, "rating": rating_f,
    })
    mean = feedback.group_by("interaction_id").agg(pl.col("rating").mean().alias("mean_feedback_rating"))
    interactions = interactions.join(mean, on="interaction_id", how="left", maintain_order="left")

    scores = interactions.select(
        "interaction_id", "batch", "world_id", "round", "agent_id", "agent_model").with_columns(
        pl.Series("alignment_before", before),
        pl.Series("alignment_after", after).set(pl.Series(kind == 9), None))
    return interactions, feedback, scores


def _text(rng: np.random.Generator, rows: int, words: int, prefix: pl.Series) -> pl.Series:
    """`rows` strings: the prefix then `words` random words (numpy picks, polars joins)."""
    vocab = pl.Series(_WORDS)
    picks = vocab.gather(rng.integers(0, len(_WORDS), rows * words))
    body = picks.reshape((rows, words)).arr.join(" ")
    return prefix + " " + body


def time_named_queries(warehouse: Warehouse, names: list[str] | None = None, *,
                       repeats: int = 3) -> list[QueryTiming]:
    """Time each named query (default: all of sql/queries/) on one read-only connection, fetching the whole
    result as a polars frame: first run, and the median run (wall and process CPU time) of `repeats`. A failing
    query is recorded with its error."""
    timings = []
    with warehouse.connect(read_only=True) as con:
        con.execute("SET enable_progress_bar = false")
        for name in names or warehouse.list_queries():
            text = warehouse.query_text(name)
            runs, rows, error = [], 0, None
            for _ in range(repeats):
                start, cpu_start = time.perf_counter(), _cpu_s()
                try:
                    rows = con.sql(text).pl().height
                except Exception as exc:  # recorded and shown in the report, never hidden
                    error = f"{type(exc).__name__}: {exc}"
                    break
                runs.append((time.perf_counter() - start, _cpu_s() - cpu_start))
            median = sorted(runs)[len(runs) // 2] if runs else (0.0, 0.0)
            timings.append(QueryTiming(name=name, rows=rows, first_s=runs[0][0] if runs else 0.0,
                                       median_s=median[0], median_cpu_s=median[1], error=error))
    return timings


def _time_row_inserts(warehouse: Warehouse, tmp: Path) -> float:
    """The same rows into an empty alignment_samples through executemany (one transaction)."""
    with warehouse.connect(read_only=True) as con:
        con.execute("SET enable_progress_bar = false")
        rows = con.execute(f"SELECT {', '.join(SAMPLE_COLUMNS)} FROM alignment_samples").fetchall()
    target = Warehouse(tmp / "rows.duckdb")
    placeholders = ", ".join("?" for _ in SAMPLE_COLUMNS)
    start = time.perf_counter()
    with target.transaction() as con:
        con.executemany(f"INSERT INTO alignment_samples ({', '.join(SAMPLE_COLUMNS)}) VALUES ({placeholders})", rows)
    elapsed = time.perf_counter() - start
    if target.count("alignment_samples") != len(rows):
        raise RuntimeError("row-insert comparison stored a different number of rows")
    return elapsed


def _time_json_save(warehouse: Warehouse, tmp: Path) -> tuple[float, int]:
    """The same rows written as one JSON file (list of records), as the original saved its data."""
    with warehouse.connect(read_only=True) as con:
        con.execute("SET enable_progress_bar = false")
        frame = con.sql(f"SELECT {', '.join(SAMPLE_COLUMNS)} FROM alignment_samples").pl()
    path = tmp / "samples.json"
    start = time.perf_counter()
    records = frame.with_columns(pl.col("created_at").cast(pl.String)).to_dicts()
    with path.open("w") as fh:
        json.dump(records, fh, ensure_ascii=False, indent=2)
    elapsed = time.perf_counter() - start
    return elapsed, path.stat().st_size


class _PeakMemory:
    """Peak resident memory from now until stop(), in MiB."""

    def __init__(self):
        self.method = "VmHWM after /proc/self/clear_refs reset"
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.baseline = _status_kib("VmRSS") / 1024
        except OSError:
            self.method = "ru_maxrss growth (process high-water mark)"
            self.baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def stop(self) -> tuple[float, float, str]:
        if self.method.startswith("VmHWM"):
            return _status_kib("VmHWM") / 1024, self.baseline, self.method
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, self.baseline, self.method


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {key}")
