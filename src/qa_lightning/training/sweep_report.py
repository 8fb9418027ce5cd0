"""``SweepReport``: a Hydra callback that writes ``sweep_report.html`` after a multirun (after
``SweepSummary``, whose ``sweep_summary.json`` it reads)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig

from qa_lightning.report.sweep import write_sweep_report

log = logging.getLogger(__name__)


class SweepReport(HydraCallback):
    """After a multirun, ``sweep_report.html`` in the sweep directory; a failure to write it is
    logged, never raised (the sweep's results are already on disk)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            path = write_sweep_report(Path(config.hydra.sweep.dir))
        except Exception as err:  # the report must not turn a finished sweep into a failure
            log.error("Could not write the sweep report: %s: %s", type(err).__name__, err)
            return
        log.info("Sweep report: %s", path)
