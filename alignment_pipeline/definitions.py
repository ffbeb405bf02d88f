"""Dagster entry point (`workspace.yaml` loads this module): every asset, check, job, sensor and schedule found
in the `defs/` package, with the pipeline resource and the executor."""

import dagster as dg

from alignment_pipeline import defs as defs_package
from alignment_pipeline.defs.resources import default_resource

# Steps run in separate processes; DuckDB admits one writer process, so steps tagged as writers run one at a time.
executor = dg.multiprocess_executor.configured(
    {"tag_concurrency_limits": [{"key": "alignment/duckdb", "value": "writer", "limit": 1}]}
)


def build_definitions() -> dg.Definitions:
    return dg.Definitions.merge(
        dg.components.load_defs(defs_root=defs_package),
        dg.Definitions(resources={"pipeline": default_resource()}, executor=executor),
    )


defs = build_definitions()
