"""Reference answers of transformers 4.x ``pipeline("question-answering")`` (run by pipeline_parity.py).

Runs in a separate virtual environment with ``transformers<5`` (not the project's):
``python _pipeline_reference.py MODEL_DIR QUESTIONS_JSON OUTPUT_JSON``. QUESTIONS_JSON is a list of
``{"key", "question", "context"}``; OUTPUT_JSON maps ``"false"``/``"true"``
(handle_impossible_answer) to ``{key: {"answer", "start", "end", "score"}}``. The pipeline runs
with its default settings and batch size 1. Its own steps are called as ``pipe(question=,
context=)`` calls them (``_args_parser``, then ``run_single``'s preprocess / forward /
postprocess), with one change: the model runs once per question and both settings postprocess
its outputs (postprocess does not modify them).
"""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> None:
    import torch
    import transformers
    from transformers import pipeline

    model_dir, questions_file, output_file = sys.argv[1:4]
    torch.set_num_threads(int(os.environ.get("QA_BENCH_THREADS", "2")))
    with open(questions_file) as f:
        items = json.load(f)
    qa = pipeline("question-answering", model=model_dir, tokenizer=model_dir, device=-1)
    result: dict = {"transformers": transformers.__version__, "torch": torch.__version__}
    start = time.perf_counter()
    params = {h: qa._sanitize_parameters(handle_impossible_answer=h) for h in (False, True)}
    answers: dict[bool, dict] = {False: {}, True: {}}
    for i, item in enumerate(items):
        [example] = qa._args_parser(question=item["question"], context=item["context"])
        preprocess, forward, _ = params[False]
        outputs = [qa.forward(inputs, **forward) for inputs in qa.preprocess(example, **preprocess)]
        for handle, (_, _, postprocess) in params.items():
            out = qa.postprocess(outputs, **postprocess)
            answers[handle][item["key"]] = {k: out[k] for k in ("answer", "start", "end", "score")}
        if i % 200 == 0:
            print(f"[reference] {i} / {len(items)}", file=sys.stderr, flush=True)
    for handle, by_key in answers.items():
        result[str(handle).lower()] = by_key
    result["seconds"] = time.perf_counter() - start
    with open(output_file, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
