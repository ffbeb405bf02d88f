"""Training: the Stable Alignment loss in the paper's three stages, with SFT, DPO and SPPO baselines.

Entry points (imported from their modules, so importing the package stays cheap):
- `stages.CHECKPOINTS` -> what gets trained: each stage and baseline with its objective, samples and parent;
- `data.load_groups(warehouse, sample_type)` -> prompt groups from alignment_samples;
- `trainer.train(TrainRequest(...))` -> `TrainResult` (a saved, MLflow-registered checkpoint; resumable;
  NaN-guarded);
- `curriculum.spec_for / stage_groups / train_stage` -> one stage or baseline trained and recorded in the
  `checkpoints` table by `lineage.record_checkpoint`.
"""
