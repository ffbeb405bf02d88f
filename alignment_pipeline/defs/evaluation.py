"""benchmark_tables: the multiple-choice tasks (lm-eval's prompts on the shipped test splits) and judge-scored
HH / HH-A for one checkpoint per partition, every cell with n, its 95% interval and its paired difference from
base; checks warn where a partition's numbers cannot carry a claim (evaluation/checks.py)."""

import tempfile
from pathlib import Path

import dagster as dg

from alignment_pipeline.checks import run_checks
from alignment_pipeline.config import PipelineConfig
from alignment_pipeline.defs.common import (
    BENCHMARK_STAGE,
    DUCKDB_POOL,
    DUCKDB_TAG,
    check_results,
    check_specs,
    partitioned_check_specs,
    plain_metadata,
    png_markdown,
)
from alignment_pipeline.defs.partitions import checkpoint_partitions
from alignment_pipeline.defs.resources import PipelineResource
from alignment_pipeline.evaluation.checks import BENCHMARK_CHECKS
from alignment_pipeline.training.stages import CHECKPOINT_KINDS
from alignment_pipeline.warehouse.db import Warehouse


@dg.asset(
    partitions_def=checkpoint_partitions, group_name="benchmarks", kinds={"duckdb", "mlflow"},
    deps=[dg.AssetKey(["checkpoints", c]) for c in CHECKPOINT_KINDS],
    tags=BENCHMARK_STAGE, op_tags=DUCKDB_TAG, pool=DUCKDB_POOL,
    check_specs=partitioned_check_specs(check_specs("benchmark_tables", BENCHMARK_CHECKS), checkpoint_partitions),
    description="Benchmarks of one model (base, each stage, each baseline) into benchmark_results; the pivot "
                "view benchmark_table is shaped like the paper's table. Its overview shows every measured model "
                "(`all_models`, headings with data source and n) and the chart; checks warn where a model's "
                "numbers equal base's, rest on too few items, or differ from base within noise.",
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
        from alignment_pipeline import tracking

        model_path = resolve_model_path(config.training.base_model, home.models)
        # The base model has no training run: its evaluation gets a run of its own, listed beside the checkpoints.
        run_id = tracking.evaluation_run(home, "base", tags={"checkpoint_kind": "base", "dagster_run_id": context.run_id},
                                         params={"base_model": tracking.model_reference(config.training.base_model,
                                                                                         home)})
    else:
        row = checkpoint_row(warehouse, checkpoint)
        note = not_trained_note(row)
        if note is not None:  # its own rows would be its starting model's: stated instead of measured twice
            removed = forget_results(warehouse, checkpoint)
            context.log.warning(f"benchmarks of {checkpoint} not run: {note}")
            return dg.MaterializeResult(metadata={"not_run": f"checkpoint {checkpoint} was not trained: {note}",
                                                  "stale_rows_removed": removed},
                                        check_results=_check_results(warehouse, checkpoint, config))
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
    return dg.MaterializeResult(check_results=_check_results(warehouse, checkpoint, config), metadata={
        "all_models": all_models_table(warehouse),
        **plain_metadata(report.metadata()),
        "dagster/row_count": warehouse.count("benchmark_results", "checkpoint = ?", [checkpoint]),
        "mlflow_metrics_logged": logged,
        "table": dg.MetadataValue.md(benchmark_markdown(warehouse)),
        "table_rows": benchmark_frame(warehouse).height, "chart": chart,
        "identical_results": bool(identical),
        **({"identical_models": dg.MetadataValue.json(identical)} if identical else {}),
    })


def _check_results(warehouse: Warehouse, checkpoint: str, config: PipelineConfig) -> list[dg.AssetCheckResult]:
    return check_results(run_checks(BENCHMARK_CHECKS, warehouse=warehouse, checkpoint=checkpoint,
                                    config=config.evaluation))


def all_models_table(warehouse: Warehouse) -> dg.MetadataValue:
    """Every measured model's row as a table value: the UI shows it inline on the asset's overview, where a long
    markdown value hides behind a click."""
    from alignment_pipeline.evaluation.report import benchmark_records

    headings, rows = benchmark_records(warehouse)
    schema = dg.TableSchema(columns=[dg.TableColumn(name, "string") for name in headings])
    return dg.MetadataValue.table([dg.TableRecord(row) for row in rows], schema=schema)
