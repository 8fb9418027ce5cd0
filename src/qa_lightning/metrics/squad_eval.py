"""The official SQuAD v1.1 and v2.0 EM/F1 scoring, as pure functions.

Reproduces ``evaluate-v1.1.py`` and ``evaluate-v2.0.py`` (Rajpurkar et al.) figure for figure:
same normalization, same per-question maxima, same summation order (questions in file order)
and the same ``100.0 * sum / total`` division. Quirks kept on purpose:

* v1.1 ``f1_score`` has no empty case: F1 is 0 whenever no token is shared, so a gold answer
  that normalizes to nothing ("the") gets EM 1 but F1 0 for the prediction "a".
* v2.0 keeps the gold answers whose normalized text is non-empty (``['']`` when none is left),
  and F1 is ``int(gold_tokens == pred_tokens)`` when either side has no tokens. Whether a
  question is answerable is still ``bool(answers)`` on the raw list.
* v1.1 scores a missing prediction 0 (the script prints a warning; here a
  :class:`MissingPredictionWarning`). v2.0 skips it when scoring and then dies with a
  ``KeyError`` building the HasAns/NoAns totals, so it never scores partial predictions: here
  that is a :class:`~qa_lightning.errors.DataFormatError` naming the first missing id.
* ``best_*_thresh`` walk the no-answer probabilities in ascending order (ties in mapping
  order) using the raw, unthresholded scores; ``best_*`` divide by the number of scored
  questions and the threshold starts at 0.0.
"""

from __future__ import annotations

import os
import re
import string
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from qa_lightning.errors import DataFormatError
from qa_lightning.utils.io import read_json_file

__all__ = [
    "MissingPredictionWarning",
    "compute_exact",
    "compute_f1",
    "exact_match_score",
    "f1_score",
    "get_tokens",
    "load_gold",
    "normalize_answer",
    "question_scores",
    "read_json_file",
    "score_predictions",
]

VERSIONS = ("1.1", "2.0")
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


class MissingPredictionWarning(UserWarning):
    """Some questions have no prediction and score 0 (SQuAD v1.1)."""


# --- normalization and per-answer scores ------------------------------------------------------


def normalize_answer(s: str) -> str:
    """Lowercase, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def get_tokens(s: str) -> list[str]:
    """The normalized tokens of ``s`` (v2.0)."""
    return normalize_answer(s).split() if s else []


def _overlap_f1(pred_toks: list[str], gold_toks: list[str]) -> float:
    """Token-overlap F1 exactly as both scripts compute it; 0 when no token is shared."""
    num_same = sum((Counter(pred_toks) & Counter(gold_toks)).values())
    if num_same == 0:
        return 0
    precision = num_same / len(pred_toks)
    recall = num_same / len(gold_toks)
    return (2 * precision * recall) / (precision + recall)


def compute_exact(gold: str, pred: str) -> int:
    """v2.0 exact match: 1 if the normalized texts are equal, else 0."""
    return int(normalize_answer(gold) == normalize_answer(pred))


def compute_f1(gold: str, pred: str) -> float:
    """v2.0 F1: when either side has no tokens, 1 if both have none, else 0."""
    gold_toks, pred_toks = get_tokens(gold), get_tokens(pred)
    if not gold_toks or not pred_toks:
        return int(gold_toks == pred_toks)
    return _overlap_f1(pred_toks, gold_toks)


def exact_match_score(prediction: str, ground_truth: str) -> bool:
    """v1.1 exact match (official argument order: prediction first)."""
    return normalize_answer(prediction) == normalize_answer(ground_truth)


def f1_score(prediction: str, ground_truth: str) -> float:
    """v1.1 F1 (official argument order: prediction first); no special empty case."""
    return _overlap_f1(normalize_answer(prediction).split(), normalize_answer(ground_truth).split())


# --- dataset-level scores ---------------------------------------------------------------------


def score_predictions(
    gold_answers: Mapping[str, Sequence[str]],
    predictions: Mapping[str, str],
    *,
    version: str,
    na_probs: Mapping[str, float] | None = None,
    na_prob_thresh: float = 1.0,
) -> dict[str, Any]:
    """Score ``{qid: answer}`` against ``{qid: gold texts}`` as the official ``version`` script.

    Returns the official JSON figures in the official key order. ``na_probs`` (v2.0 only) adds
    the ``best_*`` figures; without it every no-answer probability is 0.0.
    """
    if not gold_answers:
        raise DataFormatError("there are no questions to score", field="gold_answers")
    if version == "1.1":
        if na_probs is not None or na_prob_thresh != 1.0:
            raise ValueError("na_probs and na_prob_thresh apply to SQuAD v2.0 only")
        return _score_v1(gold_answers, predictions)
    if version == "2.0":
        return _score_v2(gold_answers, predictions, na_probs, na_prob_thresh)
    raise ValueError(f"version must be one of {VERSIONS}, not {version!r}")


def question_scores(
    gold_answers: Mapping[str, Sequence[str]],
    predictions: Mapping[str, str],
    *,
    version: str,
    na_probs: Mapping[str, float] | None = None,
    na_prob_thresh: float = 1.0,
) -> tuple[dict[str, float], dict[str, float]]:
    """Per-question EM (0/1) and F1 (0..1) of the predicted questions, by the ``version`` rules.

    Their means (x100) over every question are :func:`score_predictions`' ``exact``/``f1``
    (v2.0 with the ``na_prob_thresh`` rule applied); a v1.1 question without a prediction is
    left out.
    """
    if version == "1.1":
        exact, f1 = {}, {}
        for qid, golds in gold_answers.items():
            if qid in predictions:
                exact[qid] = float(max(exact_match_score(predictions[qid], g) for g in golds))
                f1[qid] = float(max(f1_score(predictions[qid], g) for g in golds))
        return exact, f1
    if version != "2.0":
        raise ValueError(f"version must be one of {VERSIONS}, not {version!r}")
    gold = {qid: golds for qid, golds in gold_answers.items() if qid in predictions}
    has_ans = {qid: bool(golds) for qid, golds in gold.items()}
    exact_raw, f1_raw = _raw_scores_v2(gold, predictions)
    probs = {qid: 0.0 for qid in gold} if na_probs is None else na_probs
    return (
        _apply_no_ans_threshold(exact_raw, probs, has_ans, na_prob_thresh),
        _apply_no_ans_threshold(f1_raw, probs, has_ans, na_prob_thresh),
    )


def _score_v1(gold_answers: Mapping[str, Sequence[str]], predictions: Mapping[str, str]) -> dict:
    exact_match = f1 = 0
    missing = []
    for qid, golds in gold_answers.items():
        if not golds:
            raise DataFormatError(
                "a SQuAD v1.1 question needs a gold answer", qid=qid, field="answers"
            )
        if qid not in predictions:
            missing.append(qid)
            continue
        pred = predictions[qid]
        exact_match += max(exact_match_score(pred, gold) for gold in golds)
        f1 += max(f1_score(pred, gold) for gold in golds)
    if missing:
        warnings.warn(
            f"{len(missing)} of {len(gold_answers)} questions have no prediction and score 0 "
            f"(first: {missing[0]!r})",
            MissingPredictionWarning,
            stacklevel=3,
        )
    total = len(gold_answers)
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}


def _score_v2(
    gold_answers: Mapping[str, Sequence[str]],
    predictions: Mapping[str, str],
    na_probs: Mapping[str, float] | None,
    na_prob_thresh: float,
) -> dict:
    missing = [qid for qid in gold_answers if qid not in predictions]
    if missing:
        raise DataFormatError(
            f"no prediction for {len(missing)} of {len(gold_answers)} questions; the official "
            "v2.0 script cannot score partial predictions",
            qid=missing[0],
            field="predictions",
        )
    has_ans = {qid: bool(golds) for qid, golds in gold_answers.items()}
    exact_raw, f1_raw = _raw_scores_v2(gold_answers, predictions)
    probs = {qid: 0.0 for qid in predictions} if na_probs is None else na_probs
    exact = _apply_no_ans_threshold(exact_raw, probs, has_ans, na_prob_thresh)
    f1 = _apply_no_ans_threshold(f1_raw, probs, has_ans, na_prob_thresh)
    result = _eval_dict(exact, f1, list(exact))
    for prefix, answerable in (("HasAns", True), ("NoAns", False)):
        qids = [qid for qid, has in has_ans.items() if has is answerable]
        if qids:
            result.update({f"{prefix}_{k}": v for k, v in _eval_dict(exact, f1, qids).items()})
    if na_probs is not None:
        result.update(_best_thresholds(predictions, exact_raw, f1_raw, na_probs, has_ans))
    return result


def _raw_scores_v2(
    gold_answers: Mapping[str, Sequence[str]], predictions: Mapping[str, str]
) -> tuple[dict[str, float], dict[str, float]]:
    """Per-question max EM and F1 over the non-empty gold answers (``['']`` if none)."""
    exact, f1 = {}, {}
    for qid, golds in gold_answers.items():
        kept = [gold for gold in golds if normalize_answer(gold)] or [""]
        pred = predictions[qid]
        exact[qid] = max(compute_exact(gold, pred) for gold in kept)
        f1[qid] = max(compute_f1(gold, pred) for gold in kept)
    return exact, f1


def _apply_no_ans_threshold(
    scores: Mapping[str, float],
    na_probs: Mapping[str, float],
    has_ans: Mapping[str, bool],
    thresh: float,
) -> dict[str, float]:
    """Questions whose no-answer probability exceeds ``thresh`` count as answered "no answer"."""
    out = {}
    for qid, score in scores.items():
        if qid not in na_probs:
            raise DataFormatError("no no-answer probability", qid=qid, field="na_probs")
        out[qid] = float(not has_ans[qid]) if na_probs[qid] > thresh else score
    return out


def _eval_dict(exact: Mapping[str, float], f1: Mapping[str, float], qids: list[str]) -> dict:
    total = len(qids)
    return {
        "exact": 100.0 * sum(exact[qid] for qid in qids) / total,
        "f1": 100.0 * sum(f1[qid] for qid in qids) / total,
        "total": total,
    }


def _best_thresholds(
    predictions: Mapping[str, str],
    exact_raw: Mapping[str, float],
    f1_raw: Mapping[str, float],
    na_probs: Mapping[str, float],
    has_ans: Mapping[str, bool],
) -> dict:
    best_exact, exact_thresh = _best_thresh(predictions, exact_raw, na_probs, has_ans)
    best_f1, f1_thresh = _best_thresh(predictions, f1_raw, na_probs, has_ans)
    return {
        "best_exact": best_exact,
        "best_exact_thresh": exact_thresh,
        "best_f1": best_f1,
        "best_f1_thresh": f1_thresh,
    }


def _best_thresh(
    predictions: Mapping[str, str],
    scores: Mapping[str, float],
    na_probs: Mapping[str, float],
    has_ans: Mapping[str, bool],
) -> tuple[float, float]:
    """The best score over thresholds placed at each no-answer probability, and that threshold."""
    cur_score = best_score = sum(1 for has in has_ans.values() if not has)
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        diff = scores[qid] if has_ans[qid] else (-1 if predictions[qid] else 0)
        cur_score += diff
        if cur_score > best_score:
            best_score, best_thresh = cur_score, na_probs[qid]
    return 100.0 * best_score / len(scores), best_thresh


# --- reading the official data layout ---------------------------------------------------------


def load_gold(path: str | os.PathLike) -> tuple[dict[str, list[str]], str]:
    """Gold answer texts per question id (file order) and the version ("1.1" or "2.0").

    The version is "2.0" when a question has ``is_impossible`` or the file's ``version`` is 2.x.
    """
    src = str(path)
    dataset = read_json_file(path)
    articles = dataset.get("data") if isinstance(dataset, dict) else None
    if not isinstance(articles, list):
        raise DataFormatError("expected an object with a list of articles", path=src, field="data")
    gold: dict[str, list[str]] = {}
    impossible = False
    for where, qa in _questions(articles, src):
        qid = _question_id(qa, where, src)
        if qid in gold:
            raise DataFormatError(
                f"duplicate question id at {where}", path=src, qid=qid, field="id"
            )
        gold[qid] = _answer_texts(qa, qid, src)
        impossible = impossible or bool(qa.get("is_impossible"))
    if not gold:
        raise DataFormatError("the file holds no questions", path=src, field="data")
    version = "2.0" if impossible or _says_v2(dataset.get("version")) else "1.1"
    if version == "1.1":
        _check_all_answered(gold, src)
    return gold, version


def _says_v2(version: Any) -> bool:
    return str(version).lstrip("vV").startswith("2")


def _questions(articles: list, src: str) -> Iterator[tuple[str, dict]]:
    """``(location, question object)`` for every question, in file order."""
    for i, article in enumerate(articles):
        for j, paragraph in enumerate(_list_field(article, "paragraphs", f"data[{i}]", src)):
            where = f"data[{i}].paragraphs[{j}]"
            for k, qa in enumerate(_list_field(paragraph, "qas", where, src)):
                if not isinstance(qa, dict):
                    raise DataFormatError(
                        "expected a question object", path=src, field=f"{where}.qas[{k}]"
                    )
                yield f"{where}.qas[{k}]", qa


def _list_field(obj: Any, key: str, where: str, src: str) -> list:
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, list):
        raise DataFormatError("expected a list", path=src, field=f"{where}.{key}")
    return value


def _question_id(qa: dict, where: str, src: str) -> str:
    qid = qa.get("id")
    if not isinstance(qid, str) or not qid:
        raise DataFormatError("question without a string id", path=src, field=f"{where}.id")
    return qid


def _answer_texts(qa: dict, qid: str, src: str) -> list[str]:
    answers = qa.get("answers")
    if not isinstance(answers, list):
        raise DataFormatError("expected a list of answers", path=src, qid=qid, field="answers")
    texts = []
    for n, answer in enumerate(answers):
        text = answer.get("text") if isinstance(answer, dict) else None
        if not isinstance(text, str):
            raise DataFormatError(
                "answer without a text", path=src, qid=qid, field=f"answers[{n}].text"
            )
        texts.append(text)
    return texts


def _check_all_answered(gold: Mapping[str, list[str]], src: str) -> None:
    for qid, texts in gold.items():
        if not texts:
            raise DataFormatError(
                "a SQuAD v1.1 question needs a gold answer", path=src, qid=qid, field="answers"
            )
