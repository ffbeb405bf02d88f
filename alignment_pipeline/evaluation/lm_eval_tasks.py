"""lm-eval's own built-in task definitions (the YAMLs installed with lm-eval) run on rows of the shipped files
instead of their hub datasets: the reference our prompts and verdicts are checked against (tests, bench eval)."""

from __future__ import annotations

from pathlib import Path

from alignment_pipeline.evaluation.choice_tasks import CHOICE_TASKS
from alignment_pipeline.evaluation.data import read_rows

# task -> (YAML under lm_eval/tasks/, the split the definition reads)
BUILTIN_YAML = {
    "truthfulqa_mc1": ("truthfulqa/truthfulqa_mc1.yaml", "validation"),
    "ethics_cm": ("hendrycks_ethics/commonsense.yaml", "test"),
    "ethics_cm_hard": ("hendrycks_ethics/commonsense.yaml", "test"),
    "moral_stories": ("moral_stories/moral_stories.yaml", "train"),
}


def builtin_task(task: str, item_ids: list[int]):
    """lm-eval's ConfigurableTask of `task`'s built-in definition over the shipped rows `item_ids` (in order)."""
    import datasets
    import lm_eval
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    yaml_name, split = BUILTIN_YAML[task]
    config = dict(load_yaml(Path(lm_eval.__file__).parent / "tasks" / yaml_name, resolve_func=True))
    rows = read_rows(CHOICE_TASKS[task].items()[0].file)
    docs = [dict(rows[i]) for i in item_ids]

    def load(**_kwargs) -> datasets.DatasetDict:
        return datasets.DatasetDict({split: datasets.Dataset.from_list(docs)})

    for key in ("dataset_path", "dataset_name", "training_split", "validation_split", "test_split", "tag"):
        config.pop(key, None)
    config.update(custom_dataset=load, test_split=split, task=f"{config['task']}_shipped")
    return ConfigurableTask(config=config)
