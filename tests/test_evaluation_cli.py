"""`alignment-pipeline evaluate`: named tasks without a limit score the whole split; the profile's limit otherwise."""

from datetime import datetime

from typer.testing import CliRunner

from alignment_pipeline.cli import app
from alignment_pipeline.evaluation.choice_eval import select_items


def test_named_task_without_limit_is_the_whole_split(home, monkeypatch):
    from alignment_pipeline.evaluation import results

    seen = []

    def fake(warehouse, *, checkpoint, kind, model_path, config, judge, base_models=(), **_):
        seen.append(config)
        return results.EvalReport(checkpoint, kind, model_path, [], {}, None, datetime.now(), 0)

    monkeypatch.setattr(results, "evaluate_checkpoint", fake)
    monkeypatch.setattr("alignment_pipeline.context.Pipeline.backend", lambda self, spec: None)
    runner = CliRunner()
    done = runner.invoke(app, ["evaluate", "--checkpoint", "m", "--tasks", "truthfulqa_mc1"])
    assert done.exit_code == 0, done.output
    assert seen[-1].tasks == ["truthfulqa_mc1"] and seen[-1].limit is None
    assert len(select_items("truthfulqa_mc1", seen[-1].limit, seen[-1].seed)) == 817
    done = runner.invoke(app, ["evaluate", "--checkpoint", "m", "--limit", "5"])
    assert done.exit_code == 0, done.output
    assert seen[-1].limit == 5
