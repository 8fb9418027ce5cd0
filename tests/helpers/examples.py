"""Synthetic SQuAD-style examples with distinct titles, contexts and ids (splits, caches)."""

from __future__ import annotations

import datasets

from qa_lightning.data.sources import records_to_dataset


def make_dataset(titles: int = 12, paragraphs: int = 3, questions: int = 4) -> datasets.Dataset:
    """A synthetic dataset with distinct titles, contexts and ids."""
    records = [
        {
            "id": f"t{t}-p{p}-q{q}",
            "title": f"title {t}",
            "context": f"context {t}-{p} with answer{q} inside",
            "question": f"question {q}?",
            "answers": {"text": [f"answer{q}"], "answer_start": [len(f"context {t}-{p} with ")]},
        }
        for t in range(titles)
        for p in range(paragraphs)
        for q in range(questions)
    ]
    return records_to_dataset(records)
