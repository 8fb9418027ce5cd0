"""Does transformers 4.x load a ``hf_model/`` folder and answer with it? (run by real_backbones.py).

Runs in the separate ``transformers<5`` venv (not the project's):
``python _tf4_load_check.py MODEL_DIR QUESTIONS_JSON OUTPUT_JSON``. QUESTIONS_JSON is a list of
``{"id", "question", "context"}``. Checks, each recorded rather than raised:

- ``AutoTokenizer`` and ``AutoModelForQuestionAnswering`` load the folder;
- every tokenizer output is an argument of the model's ``forward`` and the model runs on them;
- ``pipeline("question-answering")`` (default settings, ``handle_impossible_answer`` off and on)
  answers each question with ``context[start:end] == answer``.

OUTPUT_JSON: ``{"ok", "transformers", "torch", "tokenizer", "model", "tokenizer_outputs",
"inputs_not_taken", "answers": [...], "bad_offsets": [...], "error"?}``.
"""

from __future__ import annotations

import inspect
import json
import sys
import traceback
from typing import Any


def check(model_dir: str, items: list[dict[str, str]]) -> dict[str, Any]:
    import torch
    import transformers
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer, pipeline

    result: dict[str, Any] = {"transformers": transformers.__version__, "torch": torch.__version__}
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForQuestionAnswering.from_pretrained(model_dir).eval()
    result["tokenizer"] = type(tokenizer).__name__
    result["model"] = type(model).__name__
    encoded = tokenizer(items[0]["question"], items[0]["context"], return_tensors="pt")
    params = inspect.signature(model.forward).parameters
    result["tokenizer_outputs"] = list(encoded)
    result["inputs_not_taken"] = [name for name in encoded if name not in params]
    with torch.inference_mode():
        model(**encoded)
    qa = pipeline("question-answering", model=model, tokenizer=tokenizer, device=-1)
    answers, bad = [], []
    for item in items:
        for handle in (False, True):
            out = qa(
                question=item["question"], context=item["context"], handle_impossible_answer=handle
            )
            row = {"id": item["id"], "handle_impossible_answer": handle}
            row |= {k: out[k] for k in ("answer", "start", "end", "score")}
            answers.append(row)
            if item["context"][out["start"] : out["end"]] != out["answer"]:
                bad.append(row)
    result["answers"] = answers
    result["bad_offsets"] = bad
    result["ok"] = not result["inputs_not_taken"] and not bad
    return result


def main() -> None:
    model_dir, questions_file, output_file = sys.argv[1:4]
    with open(questions_file) as f:
        items = json.load(f)
    try:
        result = check(model_dir, items)
    except Exception as err:  # recorded: the point is to learn which step fails
        result = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        result["traceback"] = traceback.format_exc()[-3000:]
    with open(output_file, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
