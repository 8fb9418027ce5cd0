"""Train, then evaluate the best checkpoint: ``python -m qa_lightning [overrides]``.

The run directory (``outputs/<task>/runs/<time>/``) receives the resolved config, ``checkpoints/``
(best by ``val/f1`` and ``last.ckpt``), ``metrics.json``, ``predictions.json``, ``null_odds.json``
(v2.0), ``hf_model/`` and ``curves.png``.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from qa_lightning.cli.task import exit_on_project_error, task_wrapper
from qa_lightning.paths import config_dir
from qa_lightning.training.run import optimized_value, train_and_evaluate

run = task_wrapper(train_and_evaluate)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Entry point of ``python -m qa_lightning`` and the ``qa-lightning`` console script."""
    with exit_on_project_error():
        return optimized_value(cfg, run(cfg))


if __name__ == "__main__":
    main()
