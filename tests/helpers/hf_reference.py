"""Hugging Face's question-answering example, loaded from ``../shared/reference/hf_qa_example/`` and run.

The code is never copied: ``run_qa.py``'s ``prepare_train_features`` / ``prepare_validation_features``
are nested in its ``main()``, so their source is cut out with ``ast`` and executed with the names they
close over; ``utils_qa.py`` is imported as a module. ``$QA_SHARED_REFERENCE`` overrides the folder
(default ``<repo>/../shared/reference/hf_qa_example``).
"""

from __future__ import annotations

import ast
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

from helpers import REPO

PREPARE_FUNCTIONS = ("prepare_train_features", "prepare_validation_features")


def hf_example_dir() -> Path:
    """The folder holding ``run_qa.py`` and ``utils_qa.py`` (may not exist)."""
    default = REPO.parent / "shared" / "reference" / "hf_qa_example"
    return Path(os.environ.get("QA_SHARED_REFERENCE") or default)


def missing_reason() -> str | None:
    """Why the reference cannot be used here, or ``None`` when it can."""
    folder = hf_example_dir()
    for name in ("run_qa.py", "utils_qa.py"):
        if not (folder / name).is_file():
            return f"HF reference {folder / name} not found (set QA_SHARED_REFERENCE)"
    return None


def require() -> Path:
    """The reference folder, or ``FileNotFoundError`` saying where it was looked for."""
    reason = missing_reason()
    if reason:
        raise FileNotFoundError(reason)
    return hf_example_dir()


def utils_qa() -> ModuleType:
    """``utils_qa.py`` as a module (``postprocess_qa_predictions``)."""
    path = require() / "utils_qa.py"
    spec = importlib.util.spec_from_file_location("hf_utils_qa", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prepare_functions(
    tokenizer: Any, max_seq_length: int = 384, doc_stride: int = 128, pad_to_max_length: bool = True
) -> dict[str, Callable[[dict[str, list]], Any]]:
    """``run_qa.py``'s two feature functions, bound to ``tokenizer`` and the window settings.

    Columns are the hub ``squad`` ones (``question``, ``context``, ``answers``); padding on the
    right as for every encoder here. ``pad_to_max_length`` is run_qa's default (True).
    """
    source = (require() / "run_qa.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    nested = [
        n for n in main.body if isinstance(n, ast.FunctionDef) and n.name in PREPARE_FUNCTIONS
    ]
    if len(nested) != len(PREPARE_FUNCTIONS):
        raise RuntimeError(f"run_qa.py: {PREPARE_FUNCTIONS} not found in main()")
    namespace: dict[str, Any] = {
        "tokenizer": tokenizer,
        "max_seq_length": max_seq_length,
        "data_args": SimpleNamespace(doc_stride=doc_stride, pad_to_max_length=pad_to_max_length),
        "pad_on_right": tokenizer.padding_side == "right",
        "question_column_name": "question",
        "context_column_name": "context",
        "answer_column_name": "answers",
    }
    module = ast.Module(body=nested, type_ignores=[])
    exec(compile(module, str(hf_example_dir() / "run_qa.py"), "exec"), namespace)
    return {name: namespace[name] for name in PREPARE_FUNCTIONS}
