"""Every config combination that matters composes, resolves and names its choices on error."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf, open_dict

from qa_lightning.paths import config_dir

MODELS = ["minilm", "bert", "distilbert", "roberta", "deberta", "longformer"]
DATA = ["sample", "squad", "squad_v2", "files", "squad_carved"]
TRAINERS = ["default", "cpu", "gpu", "ddp", "ddp_sim", "fsdp"]
PRETRAINED = {
    "minilm": "minilm",
    "bert": "bert-base-uncased",
    "distilbert": "distilbert-base-uncased",
    "roberta": "roberta-base",
    "deberta": "microsoft/deberta-v3-base",
    "longformer": "allenai/longformer-base-4096",
}


@pytest.fixture(autouse=True)
def _clear_hydra():
    GlobalHydra.instance().clear()
    yield
    GlobalHydra.instance().clear()


def compose_cfg(overrides: list[str], name: str = "train"):
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose(name, overrides=overrides, return_hydra_config=True)
    # resolve everything that does not need a running Hydra job
    with open_dict(cfg):
        cfg.paths.output_dir = "/tmp/qa-out"
        cfg.paths.root_dir = "/tmp"
        cfg.hydra.runtime.output_dir = "/tmp/qa-out"
    return cfg


def resolved(cfg, key: str):
    return OmegaConf.to_container(OmegaConf.select(cfg, key), resolve=True)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("data", DATA)
def test_model_x_data_on_cpu_composes(model, data):
    overrides = [f"model={model}", f"data={data}", "trainer=cpu"]
    if data == "files":
        overrides += ["data.train_file=train.json", "data.validation_file=dev.json"]
    cfg = compose_cfg(overrides)
    model_cfg = resolved(cfg, "model")
    data_cfg = resolved(cfg, "data")
    assert model_cfg["pretrained"] == PRETRAINED[model]
    assert data_cfg["tokenizer"] == PRETRAINED[model]
    assert data_cfg["doc_stride"] < data_cfg["max_length"]
    assert cfg.trainer.accelerator == "cpu"
    assert model_cfg["optimizer"]["_partial_"] and model_cfg["scheduler"]["_partial_"]


@pytest.mark.parametrize("trainer", TRAINERS)
def test_trainer_configs_compose(trainer):
    cfg = compose_cfg([f"trainer={trainer}"])
    assert cfg.trainer._target_ == "lightning.pytorch.trainer.Trainer"
    if trainer == "ddp_sim":
        assert (cfg.trainer.accelerator, cfg.trainer.devices, cfg.trainer.strategy) == (
            "cpu",
            2,
            "ddp",
        )


def test_backbone_settings_survive_trainer_defaults():
    cfg = compose_cfg(["model=longformer", "trainer=gpu"])
    assert cfg.data.max_length == 1024 and cfg.model.gradient_checkpointing
    assert cfg.trainer.max_epochs == 2 and cfg.trainer.precision == "bf16-mixed"


@pytest.mark.parametrize(
    "experiment",
    [
        f"{m}_{d}"
        for m in ("bert", "distilbert", "roberta", "deberta", "longformer")
        for d in ("squad", "squad_v2")
    ],
)
def test_experiments_reproduce_published_recipes(experiment):
    cfg = compose_cfg([f"experiment={experiment}"])
    model, data = experiment.split("_", 1)
    assert cfg.model.pretrained == PRETRAINED[model]
    assert cfg.data.dataset == data
    assert cfg.total_batch_size > 0 and cfg.trainer.max_epochs >= 2
    if experiment == "bert_squad":  # Devlin et al. 2019: 2 epochs, lr 3e-5, batch 32
        assert (cfg.trainer.max_epochs, cfg.model.optimizer.lr, cfg.total_batch_size) == (
            2,
            3e-5,
            32,
        )


@pytest.mark.parametrize("debug", ["fdr", "limit", "overfit"])
def test_debug_configs(debug):
    cfg = compose_cfg([f"debug={debug}"])
    assert cfg.task_name == "debug"


def test_logger_configs():
    for logger in ("csv", "wandb", "tensorboard", "many"):
        cfg = compose_cfg([f"logger={logger}"])
        assert all("_target_" in conf for conf in cfg.logger.values())
    assert set(compose_cfg(["logger=many"]).logger) == {"csv", "tensorboard", "wandb"}


def test_hparams_search_uses_optuna_and_optimises_val_f1():
    cfg = compose_cfg(["hparams_search=optuna"])
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert cfg.optimized_metric == "val/f1" and cfg.hydra.sweeper.direction == "maximize"
    assert set(cfg.hydra.sweeper.params) == {
        "model.optimizer.lr",
        "data.batch_size",
        "model.scheduler.warmup_ratio",
    }


def test_eval_and_predict_configs_compose():
    cfg = compose_cfg(
        ["ckpt_path=x.ckpt", "data=files", "data.validation_file=dev.json"], name="eval"
    )
    assert cfg.data.train_file is None
    cfg = compose_cfg(["model_path=m", "question=q", "context=c"], name="predict")
    assert cfg.top_k == 3


def test_wrong_group_choice_names_the_choices():
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg(["model=bertt"])
    message = str(err.value)
    assert "bertt" in message and "deberta" in message and "minilm" in message


def test_missing_required_value_is_reported():
    cfg = compose_cfg(["data=files"])
    with pytest.raises(Exception, match="train_file"):
        OmegaConf.to_container(cfg.data, resolve=True, throw_on_missing=True)


def test_entry_point_finds_its_configs_from_any_directory(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "qa_lightning", "--cfg", "job", "model=deberta"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "pretrained: microsoft/deberta-v3-base" in proc.stdout


def test_fast_precision_follows_the_cpu_flags(tmp_path, monkeypatch) -> None:
    from qa_lightning.utils import resolvers

    with_bf16 = tmp_path / "bf16"
    with_bf16.write_text("processor : 0\nflags : fpu sse avx512f avx512_bf16 amx_tile\n")
    without = tmp_path / "plain"
    without.write_text("processor : 0\nflags : fpu sse avx2 avx512f\n")
    assert resolvers.cpu_has_fast_bf16(str(with_bf16))
    assert not resolvers.cpu_has_fast_bf16(str(without))
    assert not resolvers.cpu_has_fast_bf16(str(tmp_path / "missing"))
    for fast, expected in ((True, "bf16-mixed"), (False, "32-true")):
        monkeypatch.setattr(resolvers, "cpu_has_fast_bf16", lambda fast=fast: fast)
        assert resolvers.fast_precision("cpu") == expected
    assert resolvers.fast_precision("mps") == "32-true"


def test_minilm_default_precision_is_resolved_for_the_accelerator(monkeypatch) -> None:
    from qa_lightning.utils import resolvers

    monkeypatch.setattr(resolvers, "cpu_has_fast_bf16", lambda: False)
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=["trainer=cpu"])
        assert cfg.trainer.precision == "32-true"
        cfg = compose("train", overrides=["trainer=cpu", "trainer.precision=bf16-mixed"])
        assert cfg.trainer.precision == "bf16-mixed"
