"""The published backbones whose tokenizer files and configs lie in ``../shared/models``.

``FAMILIES`` maps the ``conf/model`` name to the folder; ``small_config_overrides`` keeps the real
config (vocabulary, positions, attention window) with fewer layers, for the fast test lane.
"""

from __future__ import annotations

import json
from pathlib import Path

FAMILIES = {
    "bert": "bert-base-uncased",
    "distilbert": "distilbert-base-uncased",
    "roberta": "roberta-base",
    "deberta": "deberta-v3-base",
    "longformer": "longformer-base-4096",
}


def small_config_overrides(family: str) -> dict[str, int]:
    """Config overrides for one thin layer of the real architecture (real vocabulary and widths
    of embeddings; fewer, narrower layers)."""
    if family == "distilbert":
        return {"n_layers": 1, "hidden_dim": 256}
    overrides = {"num_hidden_layers": 1, "intermediate_size": 256}
    if family == "longformer":
        overrides["attention_window"] = [512]
    return overrides


def run_overrides(
    family: str, models_dir: Path, files: dict[str, Path], cache: Path, thin: bool = True
) -> list[str]:
    """Hydra overrides of a 2-step training run of ``family`` with random weights from the local
    models folder, on ``files["train"]`` / ``files["val"]`` (thin: one layer of the real config)."""
    overrides = [
        f"model={family}",
        f"paths.models_dir={models_dir}",
        "model.random_init=true",
        "data=files",
        f"data.train_file={files['train']}",
        f"data.validation_file={files['val']}",
        "data.batch_size=2",
        "data.eval_batch_size=4",
        f"paths.cache_dir={cache}",
        "trainer=cpu",
        "+trainer.max_steps=2",
        "trainer.max_epochs=1",
        "trainer.num_sanity_val_steps=0",
    ]
    if thin:
        values = ",".join(f"{k}:{json.dumps(v)}" for k, v in small_config_overrides(family).items())
        overrides.append(f"model.config_overrides={{{values}}}")
    return overrides
