"""Helpers for end-to-end tests of the Hydra application: configs, small data files, tiny models."""

from __future__ import annotations

import json
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, open_dict

from qa_lightning.paths import config_dir
from qa_lightning.utils.io import read_json_file


def compose_run_cfg(overrides: list[str], output_dir: Path, name: str = "train") -> DictConfig:
    """A composed config whose ``${hydra:...}`` interpolations resolve to ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose(name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.runtime.cwd = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def slice_squad(source: Path, target: Path, start: int, count: int) -> Path:
    """Questions ``start``..``start+count`` of an official-layout file, written in the same layout."""
    data = read_json_file(source)
    index, articles = 0, []
    for article in data["data"]:
        paragraphs = []
        for para in article["paragraphs"]:
            qas = []
            for qa in para["qas"]:
                if start <= index < start + count:
                    qas.append(qa)
                index += 1
            if qas:
                paragraphs.append({"context": para["context"], "qas": qas})
        if paragraphs:
            articles.append({"title": article["title"], "paragraphs": paragraphs})
    target.write_text(json.dumps({"version": data["version"], "data": articles}), encoding="utf-8")
    return target


def v1_train_val(shared_data: Path, root: Path, train: int, val: int) -> dict[str, Path]:
    """``{"train": ..., "val": ...}``: the first ``train`` dev-v1.1 questions and ``val`` from
    question 2000 on, as official-layout files under ``root``."""
    v1 = shared_data / "squad" / "dev-v1.1.json.gz"
    return {
        "train": slice_squad(v1, root / "train.json", 0, train),
        "val": slice_squad(v1, root / "val.json", 2000, val),
    }


def file_run_overrides(model: Path, files: dict[str, Path], cache: Path, batch: int) -> list[str]:
    """Overrides for a short run of ``model`` on ``v1_train_val`` files (128 tokens, stride 48)."""
    return [
        f"model.pretrained={model}",
        "data=files",
        f"data.train_file={files['train']}",
        f"data.validation_file={files['val']}",
        "data.max_length=128",
        "data.doc_stride=48",
        f"data.batch_size={batch}",
        f"paths.cache_dir={cache}",
    ]


def resume_run_overrides(
    model: Path,
    files: dict[str, Path],
    cache: Path,
    out: Path,
    *,
    trainer: str,
    batch: int,
    every: int,
) -> list[str]:
    """Overrides of the runs the resume tests compare: :func:`file_run_overrides` on ``trainer``,
    2 deterministic epochs, a checkpoint every ``every`` steps, no console callbacks, the
    training recorded in ``out/training.json`` (``helpers.reliability.RecordTraining``)."""
    return [
        f"trainer={trainer}",
        *file_run_overrides(model, files, cache, batch=batch),
        "trainer.max_epochs=2",
        "trainer.num_sanity_val_steps=0",
        "trainer.deterministic=true",
        "callbacks.progress_bar=null",
        "callbacks.model_summary=null",
        f"checkpoint_every_n_steps={every}",
        "+callbacks.record._target_=helpers.reliability.RecordTraining",
        f"+callbacks.record.path={out / 'training.json'}",
    ]


def texts_of(path: Path, limit: int = 400) -> list[str]:
    """Contexts and questions of an official-layout file, to train tiny tokenizers on."""
    data = read_json_file(path)
    texts = []
    for article in data["data"]:
        for para in article["paragraphs"]:
            texts.append(para["context"])
            texts.extend(qa["question"] for qa in para["qas"])
            if len(texts) >= limit:
                return texts
    return texts


class StopAfterFirstEpoch(Callback):
    """Stop training cleanly after the first epoch, as an interrupted job would have."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        trainer.should_stop = True
