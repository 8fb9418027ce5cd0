"""Evaluate a checkpoint or an ``hf_model/`` directory: ``qa-lightning-eval ckpt_path=...``.

Writes the same files as training: ``metrics.json``, ``predictions.json``, ``null_odds.json`` (v2.0),
and ``test_*`` counterparts when the data has a test split (``evaluate_test=false`` skips it).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from qa_lightning.cli.task import exit_on_project_error, task_wrapper
from qa_lightning.paths import config_dir
from qa_lightning.training.run import evaluate_checkpoint

run = task_wrapper(evaluate_checkpoint)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="eval")
def main(cfg: DictConfig) -> None:
    """Entry point of ``python -m qa_lightning.cli.evaluate`` and ``qa-lightning-eval``."""
    with exit_on_project_error():
        run(cfg)


if __name__ == "__main__":
    main()
