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
        assert (cfg.trainer.accelerator, cfg.trainer.devices) == ("cpu", 2)
    if trainer in ("ddp", "ddp_sim"):  # child ranks of a sweep run its job, not their own sweep
        assert cfg.trainer.strategy._target_ == "qa_lightning.training.launcher.SweepDDPStrategy"


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


# --------------------------------------------------------------------------------------------
# Each value said once (issue 13): the composed values pinned as they were before model files
# stopped setting data.* and trainer.*, experiments stopped restating the model's values and the
# data configs came to extend data/_base.yaml instead of each other.

CONF = config_dir()
FAST_PRECISION = "${fast_precision:${trainer.accelerator}}"

# what every data config shares (data/_base.yaml), resolved under the default model (minilm)
DATA_BASE = {
    "_target_": "qa_lightning.data.datamodule.SquadDataModule",
    "tokenizer": "minilm",
    "train_split": "train",
    "validation_split": None,
    "test_split": None,
    "carve": None,
    "carve_by": "title",
    "seed": 42,
    "max_train_examples": None,
    "max_eval_examples": None,
    "max_length": 384,
    "doc_stride": 128,
    "batch_size": 16,
    "eval_batch_size": 32,
    "num_workers": 0,
    "pin_memory": False,
    "persistent_workers": False,
    "pad_to_multiple_of": 8,
    "pad_to_max_length": False,
    "group_by_length": True,
    "sort_eval_by_length": True,
    "num_proc": None,
    "keep_no_answer_features": 1.0,
    "use_cache": True,
    "version_2": None,
}
DATA_DELTAS = {
    "sample": {
        "dataset": "sample",
        "carve": {"train": 0.8, "validation": 0.2},
        "batch_size": 8,
        "keep_no_answer_features": 0.3,
    },
    "squad": {"dataset": "squad", "validation_split": "validation"},
    "squad_v2": {"dataset": "squad_v2", "validation_split": "validation", "version_2": True},
    "squad_carved": {
        "dataset": "squad",
        "validation_split": "validation",
        "carve": {"train": 5000, "validation": 1000, "test": 2000},
        "carve_by": "example",
    },
    "files": {
        "dataset": None,
        "train_file": "train.json",
        "validation_file": "dev.json",
        "test_file": None,
    },
}


def data_values(cfg) -> dict:
    data = resolved(cfg, "data")
    assert data.pop("cache_dir")  # from paths/ and the environment
    return data


def test_demo_composes_to_its_pinned_values():
    """`python -m qa_lightning` (model=minilm, data=sample): the values `make demo` was tuned with."""
    cfg = compose_cfg([])
    choices = cfg.hydra.runtime.choices
    assert (choices.model, choices.data, choices.trainer) == ("minilm", "sample", "default")
    assert resolved(cfg, "model") == {
        "_target_": "qa_lightning.model.module.QALightningModule",
        "pretrained": "minilm",
        "random_init": False,
        "config_overrides": None,
        "version_2": None,
        "n_best_size": 20,
        "max_answer_length": 30,
        "null_score_diff_threshold": 0.0,
        "attn_implementation": None,
        "gradient_checkpointing": False,
        "compile": False,
        "trust_remote_code": False,
        "max_length": 384,  # the data's window, recorded in hf_model/
        "doc_stride": 128,
        "optimizer": {
            "_target_": "torch.optim.AdamW",
            "_partial_": True,
            "lr": 2.0e-4,
            "weight_decay": 0.01,
            "betas": [0.9, 0.999],
            "eps": 1.0e-8,
        },
        "scheduler": {
            "_target_": "qa_lightning.model.optim.linear_warmup_decay",
            "_partial_": True,
            "warmup_ratio": 0.1,
        },
    }
    assert data_values(cfg) == DATA_BASE | DATA_DELTAS["sample"]
    trainer = OmegaConf.to_container(cfg.trainer, resolve=False)
    assert trainer == {
        "_target_": "lightning.pytorch.trainer.Trainer",
        "default_root_dir": "${paths.output_dir}",
        "accelerator": "auto",
        "devices": "auto",
        "num_nodes": 1,
        "strategy": "auto",
        "precision": FAST_PRECISION,
        "min_epochs": 1,
        "max_epochs": 2,
        "gradient_clip_val": 1.0,
        "accumulate_grad_batches": 1,
        "check_val_every_n_epoch": 1,
        "log_every_n_steps": 10,
        "val_check_interval": None,
        "num_sanity_val_steps": 2,
        "deterministic": False,
        "benchmark": False,
        "enable_model_summary": True,
        "plugins": [{"_target_": "qa_lightning.training.checkpoint_io.AtomicCheckpointIO"}],
    }
    assert (cfg.seed, cfg.total_batch_size, cfg.task_name) == (42, None, "train")


@pytest.mark.parametrize("data", DATA)
def test_data_configs_are_the_base_plus_their_deltas(data):
    overrides = [f"data={data}"]
    if data == "files":
        overrides += ["data.train_file=train.json", "data.validation_file=dev.json"]
    assert data_values(compose_cfg(overrides)) == DATA_BASE | DATA_DELTAS[data]


@pytest.mark.parametrize("trainer", ["default", "cpu", "gpu", "ddp_sim"])
@pytest.mark.parametrize("data", ["sample", "squad"])
def test_model_window_reaches_the_data_whatever_the_other_choices(trainer, data):
    cfg = compose_cfg(["model=longformer", f"data={data}", f"trainer={trainer}"])
    assert (cfg.data.max_length, cfg.data.doc_stride) == (1024, 128)
    assert cfg.model.gradient_checkpointing
    # the trainer's own values are not overwritten by the model
    expected = "bf16-mixed" if trainer == "gpu" else FAST_PRECISION
    assert OmegaConf.to_container(cfg.trainer, resolve=False)["precision"] == expected


def test_longformer_alone_keeps_its_long_window():
    cfg = compose_cfg(["model=longformer"])
    assert (cfg.data.max_length, cfg.data.doc_stride) == (1024, 128)
    assert cfg.model.gradient_checkpointing and cfg.trainer.max_epochs == 2
    # one key changes the window for the data; data.max_length still overrides the data alone
    assert compose_cfg(["model_window.max_length=512"]).data.max_length == 512
    assert compose_cfg(["model=longformer", "data.max_length=2048"]).data.max_length == 2048


# experiment -> (pretrained, dataset, version_2, lr, max_length, total batch, epochs)
RECIPES = {
    "bert_squad": ("bert-base-uncased", "squad", None, 3e-5, 384, 32, 2),
    "bert_squad_v2": ("bert-base-uncased", "squad_v2", True, 5e-5, 384, 48, 2),
    "distilbert_squad": ("distilbert-base-uncased", "squad", None, 3e-5, 384, 32, 2),
    "distilbert_squad_v2": ("distilbert-base-uncased", "squad_v2", True, 3e-5, 384, 32, 2),
    "roberta_squad": ("roberta-base", "squad", None, 3e-5, 384, 32, 2),
    "roberta_squad_v2": ("roberta-base", "squad_v2", True, 3e-5, 384, 32, 2),
    "deberta_squad": ("microsoft/deberta-v3-base", "squad", None, 3e-5, 384, 24, 3),
    "deberta_squad_v2": ("microsoft/deberta-v3-base", "squad_v2", True, 3e-5, 384, 24, 3),
    "longformer_squad": ("allenai/longformer-base-4096", "squad", None, 3e-5, 1024, 16, 2),
    "longformer_squad_v2": ("allenai/longformer-base-4096", "squad_v2", True, 3e-5, 1024, 16, 2),
}


@pytest.mark.parametrize("experiment", sorted(RECIPES))
def test_experiments_compose_to_their_pinned_recipes(experiment):
    cfg = compose_cfg([f"experiment={experiment}"])
    pretrained, dataset, version_2, lr, max_length, total, epochs = RECIPES[experiment]
    backbone = experiment.split("_")[0]
    model, data, trainer = resolved(cfg, "model"), resolved(cfg, "data"), resolved(cfg, "trainer")
    optimizer = model["optimizer"]
    roberta = backbone == "roberta"
    assert (model["pretrained"], optimizer["lr"]) == (pretrained, lr)
    assert optimizer["weight_decay"] == 0.01
    assert (optimizer["betas"], optimizer["eps"]) == (
        ([0.9, 0.98], 1e-6) if roberta else ([0.9, 0.999], 1e-8)
    )
    assert model["scheduler"]["warmup_ratio"] == 0.1
    assert model["attn_implementation"] == ("sdpa" if roberta else None)
    assert model["gradient_checkpointing"] == (backbone == "longformer")
    assert (data["dataset"], data["version_2"], data["carve"]) == (dataset, version_2, None)
    assert (data["max_length"], data["doc_stride"]) == (max_length, 128)
    assert data["tokenizer"] == pretrained
    assert (data["validation_split"], data["keep_no_answer_features"]) == ("validation", 1.0)
    assert (cfg.total_batch_size, trainer["max_epochs"]) == (total, epochs)
    assert (trainer["accelerator"], trainer["devices"], trainer["precision"]) == (
        "gpu",
        1,
        "bf16-mixed",
    )
    assert (list(cfg.tags), cfg.task_name, cfg.seed) == ([backbone, dataset], experiment, 42)


def _leaves(node, prefix=""):
    """Dotted key -> raw value of every leaf of a YAML mapping (lists count as leaves)."""
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _raw(path):
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def _inherited(group: str, name: str) -> dict:
    """A group file's raw values merged over its parents in the same group (defaults list)."""
    own = _raw(CONF / group / f"{name}.yaml")
    merged: dict = {}
    for parent in own.pop("defaults", []):
        if parent != "_self_":
            merged = OmegaConf.to_container(
                OmegaConf.merge(merged, _inherited(group, parent)), resolve=False
            )
    return OmegaConf.to_container(OmegaConf.merge(merged, own), resolve=False)


@pytest.mark.parametrize("group", ["model", "data"])
def test_group_files_state_only_what_differs_from_their_parents(group):
    for path in sorted((CONF / group).glob("*.yaml")):
        own = _raw(path)
        parents = [p for p in own.pop("defaults", []) if p != "_self_"]
        inherited: dict = {}
        for parent in parents:
            inherited = OmegaConf.to_container(
                OmegaConf.merge(inherited, _inherited(group, parent)), resolve=False
            )
        base = dict(_leaves(inherited))
        restated = [key for key, value in _leaves(own) if key in base and base[key] == value]
        assert not restated, f"{path.name} restates {restated}"
        if group == "model":  # the model only: the data and trainer are set elsewhere
            assert set(own) <= {"model", "model_window"}, f"{path.name} sets {sorted(own)}"


@pytest.mark.parametrize("experiment", sorted(RECIPES))
def test_experiments_state_only_the_recipes_deltas(experiment):
    raw = _raw(CONF / "experiment" / f"{experiment}.yaml")
    choices = {
        next(iter(entry)).removeprefix("override /"): next(iter(entry.values()))
        for entry in raw.pop("defaults")
    }
    cfg = compose_cfg([f"{group}={choice}" for group, choice in choices.items()])
    # the recipe's epochs and total batch are stated even where a default happens to agree
    recipe_keys = {"trainer.max_epochs", "total_batch_size", "tags", "task_name"}
    restated = [
        key
        for key, value in _leaves(raw)
        if key not in recipe_keys and OmegaConf.select(cfg, key, default=object()) == value
    ]
    assert not restated, f"{experiment} restates {restated}"
    assert set(raw) <= {"tags", "task_name", "total_batch_size", "model", "trainer"}
