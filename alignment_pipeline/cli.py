"""`alignment-pipeline`: what people do without the UI — the demo, ingestion, SQL, exports, benchmarks."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from alignment_pipeline import env
from alignment_pipeline.config import DEFAULT_PROFILE, PROFILES
from alignment_pipeline.context import Pipeline


class _Commands(TyperGroup):
    """Every command, nested ones included, runs inside this group's invoke: a settings error (unknown profile,
    unreadable or invalid settings file) is printed as its one line and exits 2, never as a traceback."""

    def invoke(self, ctx):
        from alignment_pipeline.config import SettingsError

        try:
            return super().invoke(ctx)
        except SettingsError as exc:
            err.print(Text.assemble(("settings error: ", "red"), str(exc)), soft_wrap=True)
            raise typer.Exit(2) from None


# Plain tracebacks: rich's walks an exception's cause/context chain without a guard and never ends on a cyclic
# one (Dagster re-raises errors whose chain loops back on itself).
app = typer.Typer(help="Stable Alignment as a Dagster pipeline: simulated society → aligned models.",
                  no_args_is_help=True, pretty_exceptions_enable=False, cls=_Commands)
bench_app = typer.Typer(help="Side-by-side speed and memory benchmarks.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
config_app = typer.Typer(help="The resolved settings.", no_args_is_help=True)
app.add_typer(config_app, name="config")
train_app = typer.Typer(help="Training, planned without running it.", no_args_is_help=True)
app.add_typer(train_app, name="train")
console = Console(soft_wrap=True)  # paths and table rows stay on one line, whatever the terminal width
err = Console(stderr=True, soft_wrap=True)  # an error names a file: its path is never broken across lines

# Global options, also accepted after the subcommands that use them (`demo --home X`); there they win.
HomeOption = Annotated[Path | None, typer.Option(
    "--home", help="Where everything is written (default $ALIGNMENT_HOME or ./.alignment).")]
ProfileOption = Annotated[str | None, typer.Option(
    "--profile", help=f"{' | '.join(PROFILES)} (default $ALIGNMENT_PROFILE or {DEFAULT_PROFILE}: the real "
    "SmolLM2-135M-Instruct in every role).")]
SettingsOption = Annotated[Path | None, typer.Option(
    "--settings", help="YAML/JSON file overriding profile fields (default $ALIGNMENT_SETTINGS).")]


def _export_options(home: Path | None = None, profile: str | None = None, settings: Path | None = None) -> None:
    # Exported so that Dagster steps started from here resolve the same home and profile.
    if home:
        os.environ[env.HOME] = str(home.expanduser().resolve())
    if profile:
        os.environ[env.PROFILE] = profile
    if settings:
        os.environ[env.SETTINGS] = str(settings.expanduser().resolve())


@app.callback()
def main(home: HomeOption = None, profile: ProfileOption = None, settings: SettingsOption = None) -> None:
    _export_options(home, profile, settings)


def _pipeline() -> Pipeline:
    # The library object, not the Dagster resource: commands that need no Dagster never import it.
    return Pipeline.from_env()


def _warehouse():
    return _pipeline().warehouse()


@app.command()
def ingest(
    paths: list[Path] = typer.Argument(..., help="Prompt files (.jsonl, .csv, .txt)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON report per file."),
    home: HomeOption = None,
) -> None:
    """Ingest prompt files. Exit 0: all rows accepted or already present; 3: some rows rejected (the good ones are
    stored); 2: a file could not be read."""
    _export_options(home)
    from alignment_pipeline.prompts.ingest import PromptFileError, ingest_file

    pipeline = _pipeline()
    warehouse, max_chars = pipeline.warehouse(), pipeline.config().prompts.max_chars
    code, reports = 0, []
    for path in paths:
        try:
            report = ingest_file(warehouse, path, max_chars=max_chars)
        except PromptFileError as exc:
            reports.append({"source_file": str(path), "error": str(exc)})
            if not as_json:
                err.print(f"[red]error[/red] {exc}")
            code = 2
            continue
        reports.append(report.to_dict())
        code = max(code, report.exit_code) if code != 2 else 2
        if not as_json:
            console.print(f"[bold]{path}[/bold] (batch {report.batch}): {report.accepted} accepted, "
                          f"{report.duplicates} duplicate, {len(report.rejected)} rejected")
            for r in report.rejected:
                console.print(f"  line {r.line}: {r.reason}")
    if as_json:
        print(json.dumps(reports, indent=2, default=str))
    raise typer.Exit(code)


def _sql_warehouse():
    """The warehouse `sql` reads, without creating anything: a home given by --home / $ALIGNMENT_HOME that does
    not exist is an error naming it (a mistyped path must not leave an empty home or database behind)."""
    from alignment_pipeline.paths import HomeLayout
    from alignment_pipeline.warehouse import Warehouse, WarehouseNotReady

    home = env.get(env.HOME)  # set from --home
    if home and not Path(home).expanduser().resolve().is_dir():
        raise WarehouseNotReady(f"no home at {Path(home).expanduser().resolve()}: check --home / $ALIGNMENT_HOME")
    return Warehouse(HomeLayout(home).duckdb_path)


def _blob_text(value: bytes) -> str:
    """A BLOB as DuckDB writes it when cast to VARCHAR (printable ASCII as is, other bytes as \\xNN): lossless,
    and `'<text>'::BLOB` reads it back."""
    return "".join(chr(b) if 32 <= b <= 126 and b not in b"\\'\"" else f"\\x{b:02X}" for b in value)


def _cell_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _blob_text(bytes(value))
    return str(value)


def _json_default(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _blob_text(bytes(value))
    return str(value)


def _csv_text(frame) -> str:
    """CSV through polars, with the columns its writer cannot take (BLOB, lists, structs, objects) as text:
    BLOBs as DuckDB prints them, nested values as JSON."""
    import polars as pl

    columns = []
    for name, dtype in frame.schema.items():
        if dtype == pl.Binary:
            columns.append(pl.Series(name, [None if v is None else _blob_text(v) for v in frame[name]],
                                     dtype=pl.String))
        elif dtype.is_nested() or dtype == pl.Object:
            columns.append(pl.Series(name, [None if v is None else json.dumps(v, default=_json_default)
                                            for v in frame[name].to_list()], dtype=pl.String))
    return (frame.with_columns(columns) if columns else frame).write_csv()


#: seconds a `sql` call may run before it is interrupted (--timeout changes it)
SQL_TIMEOUT_S = 60.0


@app.command()
def sql(
    query: str | None = typer.Argument(None, help="Read-only SQL: SELECT (PIVOT, UNPIVOT), or EXPLAIN of one; "
                                       "several statements separated by ';' each print their result."),
    name: str | None = typer.Option(None, "--name", help="Run a named query from sql/queries/."),
    fmt: str = typer.Option("table", "--format", help="table | csv | json"),
    list_queries: bool = typer.Option(False, "--list", help="List the named queries."),
    timeout: float = typer.Option(SQL_TIMEOUT_S, "--timeout", min=0.001, max=86400.0,
                                  help="Seconds the query may run before it is stopped."),
    home: HomeOption = None,
) -> None:
    """Query the warehouse, read-only: nothing is created or migrated, and only SELECT (or EXPLAIN of a SELECT)
    runs; anything else is refused. The query reads a private snapshot of the warehouse, taken in the moment it
    takes to copy it, so a running pipeline is never blocked, and it is stopped after --timeout seconds."""
    _export_options(home)
    from rich.measure import Measurement
    from rich.text import Text

    from alignment_pipeline.warehouse import WarehouseError, named_queries, named_query_text

    if list_queries:  # reads sql/queries/ only: no home or warehouse needed
        for q in named_queries():
            first = named_query_text(q).splitlines()[0].lstrip("- ").strip()
            print(f"{q:<28} {first}")
        return
    if (query is None) == (name is None):
        err.print("give either a SQL statement or --name QUERY (see --list)")
        raise typer.Exit(2)
    if fmt not in ("table", "csv", "json"):
        err.print(f"unknown --format {fmt!r}: table | csv | json")
        raise typer.Exit(2)
    try:
        text = named_query_text(name) if name else query
        results = _sql_warehouse().query_read_only_all(text, timeout_s=timeout)
    except WarehouseError as exc:
        err.print(Text(str(exc), style="red"), soft_wrap=True)
        raise typer.Exit(1) from None
    except Exception as exc:  # a SQL error from DuckDB: show it plainly, not as a traceback
        err.print(Text.assemble(("query failed: ", "red"), str(exc)), soft_wrap=True)
        raise typer.Exit(1) from None
    several = len(results) > 1
    if fmt == "json":
        # One statement: its rows, as before; several: each statement with its rows.
        payload = ([{"statement": statement, "rows": frame.to_dicts()} for statement, frame in results] if several
                   else results[0][1].to_dicts())
        print(json.dumps(payload, indent=2, default=_json_default))
        return
    for number, (statement, frame) in enumerate(results):
        if fmt == "csv":
            sys.stdout.write(("\n" if number else "") + _csv_text(frame))
            continue
        # Text, not markup: values such as "[red]" or ":smile:" print as they are.
        table = Table(title=Text(" ".join(statement.split())) if several else None)
        for column in frame.columns:
            table.add_column(Text(column))
        for row in frame.iter_rows():
            table.add_row(*(Text(_cell_text(v)) for v in row))
        out = console
        if not console.is_terminal:  # piped: as wide as the table needs, never squeezed to 80 columns
            width = Measurement.get(console, console.options.update(max_width=1 << 20), table).maximum
            out = Console(soft_wrap=True, width=max(width, console.width))
        out.print(table)
        out.print(f"{frame.height} rows")


@app.command()
def demo(home: HomeOption = None, profile: ProfileOption = None, settings: SettingsOption = None,
         verbose: bool = typer.Option(False, "--verbose", help="Show the runs' logs, library output and progress "
                                      "bars on the console instead of only in the log file.")) -> None:
    """Materialize the whole lineage in-process, offline, through the jobs batch_lineage, training and benchmarks
    (default profile small: the real SmolLM2-135M-Instruct as every agent, observer, judge and training base;
    --profile smoke: a scripted society and tiny random models). One line per step, then the summary; the runs'
    full output goes to a log file under the home. Exit 1 when a step failed, naming it, its error and the log."""
    from datetime import datetime

    from rich.text import Text

    from alignment_pipeline.defs.resources import default_resource
    from alignment_pipeline.demo import HomeBusy, dagster_dev_hint, run_demo

    _export_options(home, profile, settings)
    out = Console(file=sys.stdout, soft_wrap=True)  # bound now: while the runs work, sys.stdout is the log file
    log_file = None
    try:
        pipeline = default_resource()  # the runs it starts take it as their Dagster resource
        if not verbose:
            log_file = pipeline.layout().logs / f"demo-{datetime.now():%Y%m%d-%H%M%S}.log"
        out.print(f"profile [bold]{pipeline.config().profile}[/bold], home [bold]{pipeline.layout().root}"
                  f"[/bold], inbox {pipeline.inbox_dir()}" + (f", log {log_file}" if log_file else ""))
        with out.status("working") as status:
            def report(msg: str) -> None:  # one line as each step ends; the spinner shows the step that runs
                status.update(Text(msg))
                if not msg.startswith("start "):
                    out.print(Text(f"• {msg}"))

            summary = run_demo(pipeline, report=report, quiet=not verbose, log_file=log_file)
    except (FileNotFoundError, ValueError, HomeBusy) as exc:  # settings, profile, empty inbox, busy home: no run started
        err.print(Text.assemble(("demo stopped: ", "red"), f"{type(exc).__name__}: {exc}"), soft_wrap=True)
        raise typer.Exit(2) from None
    if summary.stopped_by:  # SIGTERM / Ctrl-C: its report line said what was done and not; 128 + the signal
        raise typer.Exit(128 + summary.stopped_by)
    if summary.lineage:
        out.print(Text(summary.lineage))
    if summary.lineage_error:
        err.print(Text.assemble(("lineage summary failed: ", "red"), summary.lineage_error), soft_wrap=True)
    ran = len(summary.runs)
    if summary.success:
        out.print(f"done: {ran} runs. Explore: alignment-pipeline sql --list")
    else:
        for s in summary.failures:
            out.print(Text.assemble(("failed ", "red"), f"{s.what} (job {s.job}, run {s.run_id or '-'}): {s.error}"))
        out.print(Text.assemble(("failed: ", "red"), f"{', '.join(s.what for s in summary.failures)} ({ran} runs)")
                  + (f"; full log: {log_file}" if log_file else ""))
    out.print(Text(f"Dagster UI: {dagster_dev_hint(pipeline)}"))
    if not summary.success:
        raise typer.Exit(1)


@app.command()
def export(
    fmt: str = typer.Option(..., "--format", help="grouped | pairs | sppo"),
    out: Path = typer.Option(..., "--out", help="Directory for the dataset (save_to_disk), Parquet and JSONL."),
    sample_type: str | None = typer.Option(None, "--sample-type", help="imitation | self_critique | realignment"),
    home: HomeOption = None,
) -> None:
    """Export samples as a Hugging Face dataset: grouped (responses + ratings), pairs (DPO) or sppo (win-rates)."""
    _export_options(home)
    from alignment_pipeline.samples.export import export_samples

    try:
        result = export_samples(_warehouse(), fmt, out, sample_type=sample_type)
    except (ValueError, FileExistsError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    console.print(f"{result.rows} rows → {result.dataset_dir} (datasets), {result.parquet_path}, {result.jsonl_path}",
                  soft_wrap=True)


@app.command()
def evaluate(
    checkpoint: str = typer.Option(..., "--checkpoint", help="A model directory or hub id."),
    tasks: list[str] | None = typer.Option(None, "--tasks", help="Tasks (repeat the option); default: the "
                                           "profile's (truthfulqa_mc1, ethics_cm, moral_stories, hh_preference, "
                                           "mic_proxy, hh, hh_a; also ethics_cm_hard)."),
    name: str | None = typer.Option(None, "--name", help="Row name in benchmark_results (default: the path's name)."),
    kind: str = typer.Option("baseline", "--kind", help="base | baseline | reference | stage…"),
    limit: int | None = typer.Option(None, "--limit", help="A seeded sample of this many items per multiple-choice "
                                     "task, the same for every model (default: the profile's; 0: the whole split)."),
    dtype: str | None = typer.Option(None, "--dtype", help="float32 | bfloat16 | auto (default: the profile's); "
                                     "float32 gives lm-eval's float32 verdicts exactly."),
) -> None:
    """Benchmark a model from outside the pipeline into the same benchmark_results table (per-item results in
    benchmark_items, the comparison with base in benchmark_comparisons)."""
    from alignment_pipeline.evaluation import benchmark_markdown, evaluate_checkpoint

    pipeline = _pipeline()
    config = pipeline.config().evaluation
    update = {k: v for k, v in {"tasks": tasks, "dtype": dtype}.items() if v}
    if limit is not None:
        update["limit"] = limit or None
    elif tasks:  # named tasks without a limit: the whole split
        update["limit"] = None
    config = type(config).model_validate({**config.model_dump(), **update})
    warehouse = pipeline.warehouse()
    from alignment_pipeline.evaluation.results import JUDGE_TASKS
    from alignment_pipeline.llm.models import resolve_model_path

    base = pipeline.config().training.base_model
    judged = any(t in JUDGE_TASKS for t in config.tasks)  # the judge (a model to load or build) only when it judges
    with console.status(f"evaluating {checkpoint}"):
        report = evaluate_checkpoint(
            warehouse, checkpoint=name or Path(checkpoint).name, kind=kind, model_path=checkpoint, config=config,
            judge=pipeline.backend(config.judge) if judged else None,
            base_models=[base, resolve_model_path(base, pipeline.layout().models)] if judged else [base])
    console.print(f"{report.rows_written} results written for {report.checkpoint}; items per task: "
                  + ", ".join(f"{r.task}/{r.metric} n={r.n}" for r in report.rows if r.metric in ("acc", "score"))
                  + "; seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in report.seconds.items())
                  + ("; seeded prompts removed: " + str(report.seeded_removed) if report.seeded_removed else ""))
    print(benchmark_markdown(warehouse))


@config_app.command("show")
def config_show(
    profile: ProfileOption = None,
    settings: SettingsOption = None,
    changes: bool = typer.Option(False, "--changes", help="Also print the profile's own YAML: only what it "
                                 "changes from the field defaults."),
) -> None:
    """Print the resolved settings, section by section: each field's value, its default where it differs, and
    what it means."""
    import yaml

    from alignment_pipeline.config import describe_settings, profile_overrides

    try:
        # Not exported: showing settings starts nothing that would need them.
        config = Pipeline.from_env(profile=profile, settings_file=settings and settings.expanduser().resolve()).config()
        overrides = profile_overrides(config.profile) if changes else None
    except (FileNotFoundError, ValueError) as exc:  # unknown profile, unreadable or invalid settings
        err.print(exc, markup=False, highlight=False, soft_wrap=True)  # one line: the path stays whole
        raise typer.Exit(2) from None
    sys.stdout.write(describe_settings(config))
    if changes:
        print(f"\n# profile {config.profile}: changes from the defaults")
        sys.stdout.write(yaml.safe_dump(overrides, sort_keys=False) if overrides else "{}\n")


@train_app.command("estimate")
def train_estimate(
    profile: ProfileOption = None,
    settings: SettingsOption = None,
    gpu_memory_gib: float = typer.Option(80.0, "--gpu-memory-gib", help="Memory of one GPU."),
    model_config: Path | None = typer.Option(None, "--model-config", help="A local config.json (or model "
                                             "directory) of the base model, when its shapes are not known here."),
) -> None:
    """Per-GPU memory of the profile's training (weights, gradients, optimizer state, activations with and
    without checkpointing) for DDP and FSDP on training.nproc_per_node GPUs, from the base model's shapes
    alone: nothing is loaded."""
    from alignment_pipeline.training.memory import model_shape, report_lines

    try:
        pipeline = Pipeline.from_env(profile=profile, settings_file=settings and settings.expanduser().resolve())
        config = pipeline.config().training
        shape = model_shape(str(model_config) if model_config else config.base_model, pipeline.layout().models)
    except (FileNotFoundError, ValueError) as exc:  # unknown profile or model shapes: said plainly
        err.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    for line in report_lines(shape, config, gpu_memory_gib=gpu_memory_gib, bf16=config.precision != "fp32"):
        print(line)


@bench_app.command("sandbox")
def bench_sandbox_cmd(
    size: int = typer.Option(3, help="Grid side (size*size agents)."),
    rounds: int = typer.Option(1, help="Rounds per contender."),
    max_new_tokens: int = typer.Option(32, help="Tokens per generation."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    repeats: int = typer.Option(3, help="Alternating repeats per contender; the best of each is compared."),
    model: str = typer.Option("smollm2-135m-instruct", help="hf: the model to load (packaged name, 'tiny:<name>', "
                              "directory or hub id); openai: the model name the server answers to."),
    backend: str = typer.Option("hf", help="hf: a local model, batched vs one call at a time; openai: a running "
                                "OpenAI-compatible server, --concurrency requests in flight vs one."),
    base_url: str | None = typer.Option(None, "--base-url", help="openai: the server, e.g. http://127.0.0.1:8000/v1"),
    concurrency: int = typer.Option(4, help="openai: requests in flight in the concurrent run (>= 2)."),
    as_json: bool = typer.Option(False, "--json", help="Also print the result as JSON."),
) -> None:
    """The same sandbox round batched vs one call at a time (hf), or with N requests in flight vs one (openai)."""
    from alignment_pipeline.bench.sandbox import bench_sandbox

    if backend not in ("hf", "openai"):
        err.print("--backend takes hf or openai")
        raise typer.Exit(2)
    if backend == "openai" and not base_url:
        err.print("--backend openai needs --base-url of a running OpenAI-compatible server")
        raise typer.Exit(2)
    try:
        result = bench_sandbox(home_models_dir=_pipeline().layout().models, size=size, rounds=rounds,
                               max_new_tokens=max_new_tokens, device=device, repeats=repeats, progress=err.print,
                               model=model, backend=backend, base_url=base_url, concurrency=concurrency)
    except ValueError as exc:  # bad sizes or concurrency: said plainly
        err.print(str(exc), markup=False)
        raise typer.Exit(2) from None
    for line in result.lines():
        print(line)
    if as_json:
        print(json.dumps(result.metadata(), indent=2))


@bench_app.command("eval")
def bench_eval_cmd(
    model: str = typer.Option("smollm2-135m-instruct", "--model", help="A model directory, hub id or packaged name."),
    task: str = typer.Option("truthfulqa_mc1", "--task", help="A multiple-choice task with an lm-eval built-in twin."),
    items: int = typer.Option(50, "--items", help="The same seeded items on both sides."),
    batch_size: int = typer.Option(16, "--batch-size", help="lm-eval's batch size."),
) -> None:
    """Items per second of our evaluation against lm-eval's own simple_evaluate (its built-in task definition on the
    same shipped rows), same model and items, side by side; the per-item verdicts must agree."""
    from alignment_pipeline.evaluation.bench import bench_eval
    from alignment_pipeline.llm.models import resolve_model_path

    path = resolve_model_path(model, _pipeline().layout().models)
    for line in bench_eval(path, task, items=items, batch_size=batch_size).lines():
        print(line)


@bench_app.command("warehouse")
def bench_warehouse_cmd(
    n: int = typer.Option(169_000, help="Samples to synthesise (paper proportions)."),
    compare: bool = typer.Option(True, "--compare/--no-compare", help="Also time row inserts and JSON files."),
) -> None:
    """Build, load and query 169k samples in DuckDB, against row inserts and the original's JSON files."""
    from alignment_pipeline.bench.warehouse import bench_warehouse

    for line in bench_warehouse(n=n, compare=compare).lines():
        print(line)


@bench_app.command("trainer")
def bench_trainer_cmd(
    compare: str = typer.Option("trl", "--compare", help="trl: include TRL's DPOTrainer; none: ours only."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    model: str = typer.Option("smollm2-135m-instruct", help="The model both sides train (packaged name, "
                              "directory or hub id)."),
    steps: int = typer.Option(12, help="Steady-state optimizer steps measured per contender."),
    warmup_steps: int = typer.Option(2, help="Steps run first and dropped from the figures."),
    pairs_per_step: int = typer.Option(2, help="DPO pairs (Stable Alignment: prompts) per optimizer step."),
    toy: bool = typer.Option(True, "--toy/--no-toy", help="Also run the random-init 9M-parameter Llama."),
    repeats: int = typer.Option(1, help="Runs per contender, interleaved; each keeps its fastest (a shared "
                                "machine's load then skews all alike)."),
    json_out: Path | None = typer.Option(None, "--json-out", help="Also write the JSON to this file."),
) -> None:
    """Our DPO and Stable Alignment (K=3) vs TRL's DPOTrainer on the same model and pairs: steady-state
    tokens/s, step time, total with the reference pass, peak memory; a table, then the same as JSON."""
    from alignment_pipeline.bench.trainer import BenchSpec, bench_trainer

    if compare not in ("trl", "none"):
        err.print("--compare takes trl or none")
        raise typer.Exit(2)
    sizes = dict(device=device, steps=steps, warmup_steps=warmup_steps)
    specs = [BenchSpec.real_cpu(model, prompts_per_batch=pairs_per_step, **sizes)]
    if toy:
        specs.append(BenchSpec.toy(**sizes))
    models_dir = _pipeline().layout().models
    benches = []
    for spec in specs:
        err.print(f"running {spec.describe()}")
        bench = bench_trainer(compare_trl=compare == "trl", spec=spec, models_dir=models_dir, repeats=repeats)
        benches.append(bench.metadata())
        for line in bench.lines():
            print(line)
        print()
    text = json.dumps(benches, indent=2)
    print(text)
    if json_out:
        json_out.write_text(text + "\n")


@bench_app.command("gpu")
def bench_gpu_cmd(
    out: Path = typer.Option(..., "--out", help="Directory for gpu_bench.json and gpu_bench.md."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Every case on CPU at toy sizes (checks the machinery; "
                                 "the figures are not GPU figures)."),
    cases: str = typer.Option(",".join(("trainer_vs_trl", "fsdp", "sandbox")), help="Comma-separated cases."),
    sandbox_model: str | None = typer.Option(None, help="Model of the sandbox case (default: the packaged "
                                             "SmolLM2-135M-Instruct; dry run: a tiny model)."),
) -> None:
    """Every GPU check in one run (trainer vs TRL with MFU and peak memory, FSDP, sandbox batched vs
    sequential), each under its own time budget; failures are recorded, not fatal. Exit 1 if a case failed."""
    from alignment_pipeline.bench.gpu import run_gpu_bench

    try:
        report = run_gpu_bench(out, dry_run=dry_run, models_dir=_pipeline().layout().models,
                               sandbox_model=sandbox_model, cases=tuple(c.strip() for c in cases.split(",") if c.strip()),
                               progress=err.print)
    except ValueError as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(2) from None
    sys.stdout.write(report.markdown())
    if any(c.status == "failed" for c in report.cases):
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
