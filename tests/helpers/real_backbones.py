"""The published backbones whose tokenizer files and configs lie in ``../shared/models``.

``FAMILIES`` maps the ``conf/model`` name to the folder; ``small_config_overrides`` keeps the real
config (vocabulary, positions, attention window) with fewer layers, for the fast test lane.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

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


def reference_train_features(
    run_qa: Path, tokenizer: Any, max_length: int = 384, doc_stride: int = 128
) -> Callable[[dict[str, list]], Any]:
    """Hugging Face ``run_qa.py``'s own ``prepare_train_features`` (nested in its ``main()``),
    compiled from that file and bound to the names it closes over; no code is copied."""
    tree = ast.parse(run_qa.read_text(encoding="utf-8"))
    node = next(
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.FunctionDef) and n.name == "prepare_train_features"
    )
    module = ast.Module(body=[node], type_ignores=[])
    namespace: dict[str, Any] = {
        "tokenizer": tokenizer,
        "max_seq_length": max_length,
        "data_args": SimpleNamespace(doc_stride=doc_stride, pad_to_max_length=False),
        "pad_on_right": tokenizer.padding_side == "right",
        "question_column_name": "question",
        "context_column_name": "context",
        "answer_column_name": "answers",
    }
    exec(compile(module, str(run_qa), "exec"), namespace)
    return namespace["prepare_train_features"]


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
