"""benchmark_tables: lm-eval tasks and judge-scored HH / HH-A for one checkpoint per partition."""

import tempfile
from pathlib import Path

import dagster as dg

from alignment_pipeline.defs.common import (
    BENCHMARK_STAGE,
    DUCKDB_POOL,
    DUCKDB_TAG,
    plain_metadata,
    png_markdown,
)
from alignment_pipeline.defs.partitions import CHECKPOINTS, checkpoint_partitions
from alignment_pipeline.defs.resources import PipelineResource


@dg.asset(
    partitions_def=checkpoint_partitions, group_name="benchmarks", kinds={"duckdb", "mlflow"},
    deps=[dg.AssetKey(["checkpoints", c]) for c in CHECKPOINTS if c != "base"],
    tags=BENCHMARK_STAGE, op_tags=DUCKDB_TAG, pool=DUCKDB_POOL,
    description="Benchmarks of one model (base, each stage, each baseline) into benchmark_results; the pivot "
                "view benchmark_table is shaped like the paper's table.",
)
def benchmark_tables(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    from alignment_pipeline.evaluation import (
        benchmark_chart_png,
        benchmark_markdown,
        checkpoint_kind,
        evaluate_checkpoint,
        log_metrics_to_run,
    )
    from alignment_pipeline.llm.models import resolve_model_path
    from alignment_pipeline.training.lineage import checkpoint_row

    checkpoint, config, home, warehouse = (context.partition_key, pipeline.config(), pipeline.layout(),
                                           pipeline.warehouse())
    run_id = None
    if checkpoint == "base":
        model_path = resolve_model_path(config.training.base_model, home.models)
    else:
        row = checkpoint_row(warehouse, checkpoint)
        if row is None:
            raise dg.Failure(f"checkpoint {checkpoint!r} has not been trained yet")
        model_path, run_id = row["path"], row["mlflow_run_id"]
    report = evaluate_checkpoint(warehouse, checkpoint=checkpoint, kind=checkpoint_kind(checkpoint), model_path=model_path,
                                 config=config.evaluation, judge=pipeline.backend(config.evaluation.judge))
    logged = log_metrics_to_run(run_id, report.rows, home=home)
    with tempfile.TemporaryDirectory() as tmp:
        chart = png_markdown(benchmark_chart_png(warehouse, Path(tmp) / "bench.png"), "benchmarks")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": report.rows_written, "mlflow_metrics_logged": logged,
        "table": dg.MetadataValue.md(benchmark_markdown(warehouse)), "chart": chart,
        **plain_metadata(report.metadata()),
    })
