"""benchmark_tables: the multiple-choice tasks (lm-eval's prompts on the shipped test splits) and judge-scored
HH / HH-A for one checkpoint per partition, every cell with n, its 95% interval and its paired difference from
base."""

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
from alignment_pipeline.defs.partitions import checkpoint_partitions
from alignment_pipeline.defs.resources import PipelineResource
from alignment_pipeline.training.stages import CHECKPOINT_KINDS


@dg.asset(
    partitions_def=checkpoint_partitions, group_name="benchmarks", kinds={"duckdb", "mlflow"},
    deps=[dg.AssetKey(["checkpoints", c]) for c in CHECKPOINT_KINDS],
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
    from alignment_pipeline.evaluation.not_run import forget_results
    from alignment_pipeline.evaluation.report import benchmark_frame, identical_measured_rows
    from alignment_pipeline.llm.models import resolve_model_path
    from alignment_pipeline.training.lineage import checkpoint_row, not_trained_note
    from alignment_pipeline.training.reward_model import reward_model_row

    checkpoint, config, home, warehouse = (context.partition_key, pipeline.config(), pipeline.layout(),
                                           pipeline.warehouse())
    run_id = None
    if checkpoint == "base":
        model_path = resolve_model_path(config.training.base_model, home.models)
    else:
        row = checkpoint_row(warehouse, checkpoint)
        note = not_trained_note(row)
        if note is not None:  # its own rows would be its starting model's: stated instead of measured twice
            removed = forget_results(warehouse, checkpoint)
            context.log.warning(f"benchmarks of {checkpoint} not run: {note}")
            return dg.MaterializeResult(metadata={"not_run": f"checkpoint {checkpoint} was not trained: {note}",
                                                  "stale_rows_removed": removed})
        model_path, run_id = row["path"], row["mlflow_run_id"]
    # The RLHF baseline's reward model, once trained, scores the HH / HH-A answers as an extra judge.
    reward = reward_model_row(warehouse)
    report = evaluate_checkpoint(warehouse, checkpoint=checkpoint, kind=checkpoint_kind(checkpoint),
                                 model_path=model_path, config=config.evaluation,
                                 judge=pipeline.backend(config.evaluation.judge),
                                 reward_model_path=reward["path"] if reward else None)
    logged = log_metrics_to_run(run_id, report.rows, home=home)
    with tempfile.TemporaryDirectory() as tmp:
        chart = png_markdown(benchmark_chart_png(warehouse, Path(tmp) / "bench.png"), "benchmarks")
    identical = identical_measured_rows(warehouse)
    # The partition is this checkpoint's rows of benchmark_results (rows_written: those this run replaced;
    # rows of other tasks evaluated earlier stay); `table` shows every model, counted by table_rows.
    return dg.MaterializeResult(metadata={
        **plain_metadata(report.metadata()),
        "dagster/row_count": warehouse.count("benchmark_results", "checkpoint = ?", [checkpoint]),
        "mlflow_metrics_logged": logged,
        "table": dg.MetadataValue.md(benchmark_markdown(warehouse)),
        "table_rows": benchmark_frame(warehouse).height, "chart": chart,
        "identical_results": bool(identical),
        **({"identical_models": dg.MetadataValue.json(identical)} if identical else {}),
    })
