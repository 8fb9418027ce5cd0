"""Decoding benchmark: ``python bench/decode.py [--batch-size 256] [--repeats 5] [--threads 1]``.

Decodes the same random logits (fixed seed) of the real SQuAD v1.1 dev features (10,570
questions; MiniLM tokenizer, max_length 384, doc_stride 128) in one process with: the plain
reference loop of ``tests/helpers/reference_decode.py``; Hugging Face's
``postprocess_qa_predictions`` (``utils_qa``, loaded from ``../shared/reference/hf_qa_example/``;
it always builds n-best lists); and the project's ``StreamingDecoder`` (candidates batch by
batch, then merge and finalize: the path evaluation and ``QuestionAnswerer`` run too). Batches are what the evaluation loop produces by
default: features sorted by length (longest first), padded by ``QACollator`` (padded positions
get logits -1e4: evaluation masks them too); ``--order file`` keeps the file order. Each path
runs ``--repeats`` times; every figure is the median.

Top level: the answer path (answers only). ``nbest``: the n-best path (``with_nbest=True``, each
question's list of up to 20 entries ``{"text", "score", "probability", "start", "end"}``), timed
against the reference loop building its n-best lists too and against ``utils_qa``.
``project_seconds`` covers everything from the batches of logits to the returned dicts.
``agreement``: fraction of questions with the reference's answer; ``nbest_agreement``: with the
reference's n-best list (texts, scores, offsets; probabilities within 1e-6).
``utils_qa_nbest_agreement``: with the n-best list ``utils_qa`` writes (one more, untimed run with
``output_dir``): texts, scores (its ``start_logit + end_logit`` in float32) and probabilities
(within 1e-6), in order; it has no character offsets. ``lists_seconds``: building just the
returned dicts from ready Python columns (slice each text, one dict per entry, one list per
question), the part of ``project_seconds`` that no decoder returning these dicts avoids;
``speedup_bound`` (reference over it) is the most ``speedup`` could reach. ``load_average_start`` and ``load_average`` (at the end) tell how busy
the shared machine was; ``load_note`` says so when it was above 1.5.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
from itertools import chain, repeat
from typing import Any

import numpy as np
import torch
from _common import emit, log, median_of, set_threads, squad_file
from transformers import AutoTokenizer

from helpers import reference_decode as reference
from helpers.eval_data import feed
from qa_lightning.data.collate import QACollator
from qa_lightning.data.features import prepare_eval_features
from qa_lightning.data.squad_json import read_squad_file
from qa_lightning.decoding import StreamingDecoder
from qa_lightning.paths import minilm_dir

PADDING_LOGIT = -1e4


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
    """Collated batches with random start/end logits (seed 0), longest features first or not.

    Padded positions get ``PADDING_LOGIT``, what ``utils_qa`` is given there too: so every
    decoder sees the same logits (evaluation masks padding as well).
    """
    if by_length:
        lengths = np.array([len(feature["input_ids"]) for feature in features])
        features = [features[i] for i in np.argsort(-lengths, kind="stable")]
    collate = QACollator(tokenizer)
    generator = torch.Generator().manual_seed(0)
    batches = []
    for first in range(0, len(features), batch_size):
        chunk = features[first : first + batch_size]
        batch = collate(chunk)
        lengths = torch.tensor([len(feature["input_ids"]) for feature in chunk])
        padding = torch.arange(batch["input_ids"].shape[1])[None, :] >= lengths[:, None]
        for name in ("start_logits", "end_logits"):
            logits = torch.randn(batch["input_ids"].shape, generator=generator)
            batch[name] = logits.masked_fill_(padding, PADDING_LOGIT)
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
    logits = np.full((2, len(starts), width), PADDING_LOGIT, dtype=np.float32)
    hf_features = []
    for i, feature in enumerate(features):
        n = len(feature["input_ids"])
        logits[0, i, :n], logits[1, i, :n] = starts[i][:n], ends[i][:n]
        offsets = [None if o[0] < 0 else tuple(o) for o in feature["offset_mapping"]]
        example_id = columns["id"][feature["example_index"]]
        hf_features.append({"example_id": example_id, "offset_mapping": offsets})
    examples = datasets.Dataset.from_dict({"id": columns["id"], "context": columns["context"]})
    return examples, hf_features, (logits[0], logits[1])


def utils_qa_decode(inputs: tuple, output_dir: str | None = None) -> dict[str, str]:
    """Hugging Face's ``postprocess_qa_predictions`` (n_best 20, max_answer_length 30)."""
    from helpers.hf_reference import utils_qa

    os.environ.setdefault("TQDM_DISABLE", "1")
    return utils_qa().postprocess_qa_predictions(
        *inputs, n_best_size=20, max_answer_length=30, output_dir=output_dir
    )


def utils_qa_nbest(inputs: tuple) -> dict[str, list[dict]]:
    """The n-best lists ``utils_qa`` writes to ``nbest_predictions.json`` (an untimed run)."""
    with tempfile.TemporaryDirectory() as folder:
        utils_qa_decode(inputs, output_dir=folder)
        with open(os.path.join(folder, "nbest_predictions.json"), encoding="utf-8") as f:
            return json.load(f)


def _same_as_utils_qa(ours: list[dict], theirs: list[dict]) -> bool:
    """Same texts and scores in the same order, probabilities within 1e-6."""
    return len(ours) == len(theirs) and all(
        a["text"] == b["text"]
        and a["score"] == float(np.float32(b["start_logit"]) + np.float32(b["end_logit"]))
        and abs(a["probability"] - b["probability"]) <= 1e-6
        for a, b in zip(ours, theirs, strict=True)
    )


def utils_qa_nbest_agreement(ours: dict[str, list], theirs: dict[str, list]) -> float:
    return sum(_same_as_utils_qa(ours.get(q, []), e) for q, e in theirs.items()) / len(theirs)


def lists_only(nbest: dict[str, list[dict]], columns: dict[str, list]) -> Any:
    """A function building ``nbest`` again from ready Python columns: each entry's context,
    offsets, score and probability. What it does, every decoder returning these dicts must do."""
    context_of = dict(zip(columns["id"], columns["context"], strict=True))
    ids = list(nbest)
    counts = [len(nbest[qid]) for qid in ids]
    contexts = [context_of[qid] for qid in ids]
    entries = [e for qid in ids for e in nbest[qid]]
    starts, ends = [e["start"] for e in entries], [e["end"] for e in entries]
    scores, probs = [e["score"] for e in entries], [e["probability"] for e in entries]

    def build() -> dict[str, list[dict]]:
        per_entry = chain.from_iterable(map(repeat, contexts, counts))
        texts = [
            context[start:end] for context, start, end in zip(per_entry, starts, ends, strict=True)
        ]
        flat = [
            {"text": text, "score": score, "probability": prob, "start": start, "end": end}
            for text, score, prob, start, end in zip(
                texts, scores, probs, starts, ends, strict=True
            )
        ]
        out, first = {}, 0
        for qid, count in zip(ids, counts, strict=True):
            out[qid] = flat[first : first + count]
            first += count
        return out

    return build


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
    parser.add_argument("--repeats", type=int, default=5, help="runs per path (medians)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument(
        "--order",
        choices=("length", "file"),
        default="length",
        help="batches of length-sorted features (the evaluation default) or in file order",
    )
    args = parser.parse_args()
    set_threads(args.threads)
    load_start = list(os.getloadavg())
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
        "repeats": args.repeats,
        "statistic": "median",
        "threads": args.threads,
        "load_average_start": load_start,
    }
    runs: dict[str, list[float]] = {}
    from helpers.hf_reference import missing_reason

    hf_seconds = None
    if missing_reason():
        log(f"utils_qa skipped: {missing_reason()}")
    else:
        log("decoding with HF utils_qa.postprocess_qa_predictions")
        inputs = utils_qa_inputs(batches, columns, features)
        hf_answers, hf_seconds, runs["utils_qa"] = median_of(
            lambda: utils_qa_decode(inputs), args.repeats
        )
        hf_nbest = utils_qa_nbest(inputs)
        result["utils_qa_seconds"] = hf_seconds
    for with_nbest in (False, True):
        log(f"decoding, n-best lists: {with_nbest}")
        prefix = "nbest_" if with_nbest else ""
        theirs, ref_seconds, runs[f"{prefix}reference"] = median_of(
            lambda nb=with_nbest: reference_decode(batches, columns, features, nb), args.repeats
        )
        ours, seconds, runs[f"{prefix}project"] = median_of(
            lambda nb=with_nbest: project_decode(batches, columns, nb), args.repeats
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
            if hf_seconds is not None:
                timings["utils_qa_nbest_agreement"] = utils_qa_nbest_agreement(ours.nbest, hf_nbest)
            _, lists_seconds, runs["nbest_lists"] = median_of(
                lists_only(ours.nbest, columns), args.repeats
            )
            timings["lists_seconds"] = lists_seconds
            timings["speedup_bound"] = ref_seconds / lists_seconds
            result["nbest"] = timings
        else:
            result = {**result, **timings}
    result["runs"] = runs
    if max(load_start[0], os.getloadavg()[0]) > 1.5:
        result["load_note"] = (
            "1-minute load average above 1.5: other jobs shared the CPUs; absolute times are "
            "inflated, ratios less so"
        )
    emit(result)


if __name__ == "__main__":
    main()
