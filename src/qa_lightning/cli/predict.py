"""Answer questions: ``qa-lightning-predict model_path=... question=... context=...``.

Or ``input_file=`` (official SQuAD layout, or JSON lines with ``question`` and ``context``): writes
``{id: [{"answer", "score", "start", "end"}, ...]}`` to ``output_file`` (default: the run directory's
``nbest_predictions.json``) and ``{id: best answer}`` beside it as ``predictions.json``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from qa_lightning.cli.task import exit_on_project_error, task_wrapper
from qa_lightning.data.sources import load_examples
from qa_lightning.errors import QALightningError
from qa_lightning.inference import QuestionAnswerer
from qa_lightning.paths import config_dir
from qa_lightning.training.outputs import write_answers

log = logging.getLogger(__name__)


def answer_questions(cfg: DictConfig) -> dict[str, list[dict]]:
    """Answer ``question``/``context`` or every question of ``input_file``."""
    if (cfg.question is None) == (cfg.input_file is None):
        raise QALightningError("give either question= and context=, or input_file=")
    if cfg.question is not None and cfg.context is None:
        raise QALightningError("question= needs context=")
    qa = QuestionAnswerer.from_pretrained(
        cfg.model_path, device=cfg.device, batch_size=cfg.batch_size
    )
    options = {
        "top_k": cfg.top_k,
        "handle_impossible_answer": cfg.handle_impossible_answer,
        "max_answer_length": cfg.max_answer_length,
        "max_length": cfg.max_length,
        "doc_stride": cfg.doc_stride,
        "null_threshold": cfg.get("null_threshold"),
        "calibrated": cfg.get("calibrated"),
    }
    if cfg.question is not None:
        answers = {"question": qa.answer(str(cfg.question), str(cfg.context), **options)}
        print(json.dumps(answers["question"], indent=2, ensure_ascii=False))
        return answers
    examples = load_examples(cfg.input_file)
    results = qa(examples["question"], examples["context"], **options)
    answers = dict(zip(examples["id"], results, strict=True))
    output = write_answers(
        cfg.output_file or Path(cfg.paths.output_dir) / "nbest_predictions.json", answers
    )
    log.info("Answered %d questions -> %s", len(answers), output)
    return answers


run = task_wrapper(answer_questions)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="predict")
def main(cfg: DictConfig) -> None:
    """Entry point of ``python -m qa_lightning.cli.predict`` and ``qa-lightning-predict``."""
    with exit_on_project_error():
        run(cfg)


if __name__ == "__main__":
    main()
