"""Decoding benchmark: ``python bench/decode.py [--batch-size 256] [--repeats 3]``.

Decodes the same random logits (fixed seed) of the real SQuAD v1.1 dev features (10,570
questions; MiniLM tokenizer, max_length 384, doc_stride 128) twice in one process: with the
plain reference loop of ``tests/helpers/reference_decode.py`` and with the project's
``StreamingDecoder`` (candidates batch by batch, then merge and finalize: the path evaluation
runs too, as ``SquadMetric`` decodes through it). Batches are what the evaluation loop
produces by default: features sorted by length (longest first, ``data.sort_eval_by_length``),
padded by ``QACollator``; ``--order file`` keeps the file order instead. The reference sees every
feature's row of logits (padding included) in feature order. ``project_seconds`` covers
everything from the batches of logits to the answers. Both produce answers only; the ``nbest``
entry times both producing the n-best lists as well. ``agreement`` is the fraction of questions
with the same answer. ``utils_qa`` times Hugging Face's ``postprocess_qa_predictions`` (loaded from
``../shared/reference/hf_qa_example/``; it always builds n-best lists) on the same logits, rows
padded with -1e4 past each feature's length, once; ``speedup_vs_utils_qa`` is its time over the
project's, for both paths.
"""

from __future__ import annotations

import argparse
import gc
import os
from typing import Any

import numpy as np
import torch
from _common import best_of, emit, log, set_threads, squad_file
from transformers import AutoTokenizer

from helpers import reference_decode as reference
from helpers.eval_data import feed
from qa_lightning.data.collate import QACollator
from qa_lightning.data.features import prepare_eval_features
from qa_lightning.data.squad_json import read_squad_file
from qa_lightning.decoding import StreamingDecoder
from qa_lightning.paths import minilm_dir


def eval_features(tokenizer: Any) -> tuple[dict[str, list], list[dict[str, Any]]]:
    """The dev-v1.1 examples (columns) and their eval features, one dict per feature."""
    records = read_squad_file(squad_file("dev-v1.1.json.gz")).records
    columns = {key: [r[key] for r in records] for key in ("id", "question", "context", "answers")}
    feats = prepare_eval_features(columns, tokenizer, max_length=384, doc_stride=128)
    keys = ("input_ids", "offset_mapping", "example_index", "cls_index")
    features = [
        {key: feats[key][i] for key in keys} | {"feature_index": i}
        for i in range(len(feats["input_ids"]))
    ]
    return columns, features


def logit_batches(
    features: list[dict], tokenizer: Any, batch_size: int, by_length: bool
) -> list[dict]:
    """Collated batches with random start/end logits (seed 0), longest features first or not."""
    if by_length:
        lengths = np.array([len(feature["input_ids"]) for feature in features])
        features = [features[i] for i in np.argsort(-lengths, kind="stable")]
    collate = QACollator(tokenizer)
    generator = torch.Generator().manual_seed(0)
    batches = []
    for first in range(0, len(features), batch_size):
        batch = collate(features[first : first + batch_size])
        batch["start_logits"] = torch.randn(batch["input_ids"].shape, generator=generator)
        batch["end_logits"] = torch.randn(batch["input_ids"].shape, generator=generator)
        batches.append(batch)
    return batches


def project_decode(batches: list[dict], columns: dict[str, list], with_nbest: bool) -> Any:
    decoder = feed(StreamingDecoder(with_nbest=with_nbest), batches)
    return decoder.decode(columns["id"], columns["context"])


def reference_decode(
    batches: list[dict], columns: dict[str, list], features: list[dict], with_nbest: bool
) -> tuple:
    """The reference loop; each feature's logits row (as its batch padded it) in feature order."""
    starts, ends = reference.logits_by_feature(batches)
    return reference.postprocess_qa_predictions(
        columns["id"], columns["context"], features, starts, ends, with_nbest=with_nbest
    )


def utils_qa_inputs(batches: list[dict], columns: dict[str, list], features: list[dict]) -> tuple:
    """``postprocess_qa_predictions``'s arguments: examples, features (offsets ``None`` outside
    the context) and stacked logits padded with -1e4 past each feature's own length."""
    import datasets

    starts, ends = reference.logits_by_feature(batches)
    width = max(len(row) for row in starts)
    logits = np.full((2, len(starts), width), -1e4, dtype=np.float32)
    hf_features = []
    for i, feature in enumerate(features):
        n = len(feature["input_ids"])
        logits[0, i, :n], logits[1, i, :n] = starts[i][:n], ends[i][:n]
        offsets = [None if o[0] < 0 else tuple(o) for o in feature["offset_mapping"]]
        example_id = columns["id"][feature["example_index"]]
        hf_features.append({"example_id": example_id, "offset_mapping": offsets})
    examples = datasets.Dataset.from_dict({"id": columns["id"], "context": columns["context"]})
    return examples, hf_features, (logits[0], logits[1])


def utils_qa_decode(inputs: tuple) -> dict[str, str]:
    """Hugging Face's ``postprocess_qa_predictions`` (n_best 20, max_answer_length 30)."""
    from helpers.hf_reference import utils_qa

    os.environ.setdefault("TQDM_DISABLE", "1")
    return utils_qa().postprocess_qa_predictions(*inputs, n_best_size=20, max_answer_length=30)


def agreement(ours: dict[str, str], theirs: dict[str, str]) -> float:
    return sum(ours.get(qid) == answer for qid, answer in theirs.items()) / len(theirs)


def _same_entries(ours: list[dict], theirs: list[dict]) -> bool:
    """Same texts, scores and offsets; probabilities equal up to float32 rounding."""
    return len(ours) == len(theirs) and all(
        {**a, "probability": 0} == {**b, "probability": 0}
        and abs(a["probability"] - b["probability"]) <= 1e-6
        for a, b in zip(ours, theirs, strict=True)
    )


def nbest_agreement(ours: dict[str, list], theirs: dict[str, list]) -> float:
    return sum(_same_entries(ours.get(qid, []), e) for qid, e in theirs.items()) / len(theirs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument(
        "--order",
        choices=("length", "file"),
        default="length",
        help="batches of length-sorted features (the evaluation default) or in file order",
    )
    args = parser.parse_args()
    set_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    log("tokenizing dev-v1.1")
    columns, features = eval_features(tokenizer)
    batches = logit_batches(features, tokenizer, args.batch_size, args.order == "length")
    gc.collect()
    gc.freeze()  # the millions of feature objects stay out of every later garbage collection
    result: dict[str, Any] = {
        "questions": len(columns["id"]),
        "features": len(features),
        "order": args.order,
        "mean_padded_length": float(np.mean([b["input_ids"].shape[1] for b in batches])),
    }
    from helpers.hf_reference import missing_reason

    hf_seconds = None
    if missing_reason():
        log(f"utils_qa skipped: {missing_reason()}")
    else:
        log("decoding with HF utils_qa.postprocess_qa_predictions")
        inputs = utils_qa_inputs(batches, columns, features)
        hf_answers, hf_seconds = best_of(lambda: utils_qa_decode(inputs), 1)
        result["utils_qa_seconds"] = hf_seconds
    for with_nbest in (False, True):
        log(f"decoding, n-best lists: {with_nbest}")
        theirs, ref_seconds = best_of(
            lambda nb=with_nbest: reference_decode(batches, columns, features, nb), args.repeats
        )
        ours, seconds = best_of(
            lambda nb=with_nbest: project_decode(batches, columns, nb), 3 * args.repeats
        )
        timings = {
            "reference_seconds": ref_seconds,
            "project_seconds": seconds,
            "speedup": ref_seconds / seconds,
            "agreement": agreement(ours.predictions, theirs[0]),
        }
        if hf_seconds is not None:
            timings["speedup_vs_utils_qa"] = hf_seconds / seconds
            timings["utils_qa_agreement"] = agreement(ours.predictions, hf_answers)
        if with_nbest:
            timings["nbest_agreement"] = nbest_agreement(ours.nbest, theirs[2])
            result["nbest"] = timings
        else:
            result = {**result, **timings}
    emit(result)


if __name__ == "__main__":
    main()
