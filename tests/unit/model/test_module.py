"""QALightningModule, backbone loading and optimisation on the four tiny families and real MiniLM."""

from __future__ import annotations

import itertools
import json
import logging
import shutil
import time
from functools import partial
from pathlib import Path

import hydra
import pytest
import torch
from huggingface_hub import constants as hub_constants
from lightning import Trainer
from torch import nn
from torch.utils.data import DataLoader

from helpers.tiny_backbones import FAMILIES
from qa_lightning.data.collate import QACollator
from qa_lightning.data.datamodule import SquadDataModule
from qa_lightning.data.features import InputLayout, prepare_train_features
from qa_lightning.errors import IncompleteEvaluationError, OfflineError
from qa_lightning.hub import hub_reachable, load_tokenizer
from qa_lightning.model.backbone import load_qa_model
from qa_lightning.model.inputs import global_attention_mask
from qa_lightning.model.loss import span_loss
from qa_lightning.model.module import QALightningModule
from qa_lightning.model.optim import build_optimizer, linear_warmup_decay, param_groups

BACKBONES = (*FAMILIES, "minilm")
MAX_LENGTH, STRIDE = 48, 16
PEOPLE = [
    ("Alice", "Paris", "1990", "physics"),
    ("Bruno", "Lisbon", "1985", "music"),
    ("Chen", "Shanghai", "1978", "medicine"),
    ("Dara", "Dublin", "2001", "history"),
    ("Emil", "Oslo", "1969", "chemistry"),
    ("Farah", "Cairo", "1994", "law"),
]


def _record(qid: str, context: str, question: str, answer: str | None) -> dict:
    starts = [context.index(answer)] if answer else []
    return {
        "id": qid,
        "title": "people",
        "context": context,
        "question": question,
        "answers": {"text": [answer] if answer else [], "answer_start": starts},
    }


def make_records(unanswerable: bool = False) -> list[dict]:
    """Three questions per person (plus one unanswerable for v2.0); contexts overflow one window."""
    records = []
    for name, city, year, subject in PEOPLE:
        context = (
            f"{name} was born in {city} in {year}. After school, {name} studied {subject} at the "
            f"university of {city}, then worked abroad for many years before returning home."
        )
        records += [
            _record(f"{name}-where", context, f"Where was {name} born?", city),
            _record(f"{name}-when", context, f"When was {name} born?", year),
            _record(f"{name}-what", context, f"What did {name} study?", subject),
        ]
        if unanswerable:
            records.append(_record(f"{name}-who", context, f"Who founded the {city} zoo?", None))
    return records


def columns(records: list[dict]) -> dict[str, list]:
    return {key: [r[key] for r in records] for key in records[0]}


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def data_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    return {
        "v1": write_jsonl(root / "v1.jsonl", make_records()),
        "v2": write_jsonl(root / "v2.jsonl", make_records(unanswerable=True)),
    }


@pytest.fixture(scope="module")
def backbones(tiny_backbones: dict[str, Path]) -> dict[str, str]:
    """Directory (or ``"minilm"``) of each backbone: tiny random models of the four families."""
    return {**{family: str(path) for family, path in tiny_backbones.items()}, "minilm": "minilm"}


def datamodule(pretrained: str, data_file: Path) -> SquadDataModule:
    return SquadDataModule(
        tokenizer=load_tokenizer(pretrained),
        dataset=None,
        train_file=str(data_file),
        validation_file=str(data_file),
        test_file=str(data_file),
        max_length=MAX_LENGTH,
        doc_stride=STRIDE,
        batch_size=8,
        use_cache=False,
    )


def trainer(**kwargs) -> Trainer:
    options = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    return Trainer(**{**options, **kwargs})


def train_batch(pretrained: str, n: int = 6) -> dict[str, torch.Tensor]:
    tokenizer = load_tokenizer(pretrained)
    features = prepare_train_features(columns(make_records()[:n]), tokenizer, MAX_LENGTH, STRIDE)
    rows = [
        dict(zip(features, values, strict=True)) for values in zip(*features.values(), strict=True)
    ]
    return QACollator(tokenizer)(rows)


# ------------------------------------------------------------------ training and evaluation
@pytest.mark.parametrize("backbone", BACKBONES)
def test_overfits_a_batch(backbones, backbone):
    torch.manual_seed(0)
    module = QALightningModule(backbones[backbone])
    minilm = backbone == "minilm"
    batch = train_batch(backbones[backbone], n=2 if minilm else 4)
    inputs = module.model_inputs(batch)
    assert ("token_type_ids" in inputs) == (backbone in ("bert", "minilm"))
    assert ("global_attention_mask" in inputs) == (backbone == "longformer")

    lr = 5e-4 if minilm else 1e-2
    optimizer = build_optimizer(module.model, {"_target_": "torch.optim.AdamW", "lr": lr})
    module.model.eval()  # no dropout: the loss must go down step after step
    losses = []
    for _ in range(4):
        loss = span_loss(*module(batch), batch["start_positions"], batch["end_positions"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert all(b < a for a, b in itertools.pairwise(losses)), losses
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("backbone", BACKBONES)
def test_fit_logs_losses_and_squad_scores(backbones, data_files, backbone):
    dm = datamodule(backbones[backbone], data_files["v1"])
    module = QALightningModule(
        backbones[backbone],
        optimizer=partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.01),
        scheduler=partial(linear_warmup_decay, warmup_ratio=0.5),
    )
    fit_trainer = trainer(limit_train_batches=2, accumulate_grad_batches=2)
    fit_trainer.fit(module, datamodule=dm)

    logged = fit_trainer.callback_metrics
    for key in (
        "train/loss_epoch",
        "train/start_acc_epoch",
        "train/end_acc_step",
        "train/lr",
        "val/loss",
    ):
        assert key in logged, key
    assert 0.0 <= logged["val/exact_match"] <= logged["val/f1"] <= 100.0
    evaluation = module.evaluations["validation"]
    assert set(evaluation.metrics) >= {"exact_match", "f1"}
    assert set(evaluation.predictions) == set(dm.examples("validation")["id"])
    # total steps (1: 2 batches, accumulating 2) came from the trainer: decayed to 0 after the last
    assert fit_trainer.optimizers[0].param_groups[0]["lr"] == 0.0
    assert fit_trainer.lr_scheduler_configs[0].interval == "step"


class ClipRecorder(QALightningModule):
    """Records the gradient norm right after the clipping step."""

    norms: list[float]

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ):
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]]
        norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads if g is not None]))
        self.norms = [*getattr(self, "norms", []), norm.item()]


def test_fused_adamw_clips_gradients_under_bf16(backbones, data_files):
    """Lightning refuses to clip for fused optimizers; bf16 has no scaler, so the module clips."""
    module = ClipRecorder(
        backbones["bert"], optimizer=partial(torch.optim.AdamW, lr=1e-3, fused=True)
    )
    fit_trainer = trainer(
        limit_train_batches=3, limit_val_batches=1, precision="bf16-mixed", gradient_clip_val=0.01
    )
    fit_trainer.fit(module, datamodule=datamodule(backbones["bert"], data_files["v1"]))
    assert fit_trainer.optimizers[0].defaults["fused"] is True
    assert len(module.norms) == 3
    assert all(norm <= 0.01 * 1.001 for norm in module.norms), module.norms


def test_version_2_scores_validation_and_test(backbones, data_files):
    dm = datamodule(backbones["bert"], data_files["v2"])
    module = QALightningModule(backbones["bert"])  # version_2=None: taken from the datamodule
    eval_trainer = trainer()
    eval_trainer.validate(module, datamodule=dm)
    assert module.version_2
    v2_keys = ("HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "best_exact", "best_f1")
    for key in ("exact_match", "f1", *v2_keys, "best_f1_thresh"):
        assert f"val/{key}" in eval_trainer.callback_metrics, key
    validation = module.evaluations["validation"]
    assert set(validation.na_probs) == set(validation.predictions)

    eval_trainer.test(module, datamodule=dm)
    assert {f"test/{key}" for key in ("loss", "exact_match", *v2_keys)} <= set(
        eval_trainer.callback_metrics
    )
    assert "exact" in module.evaluations["test"].metrics  # official names kept for callbacks


def test_only_a_partial_loop_scores_some_questions_else_missing_ones_are_an_error(
    backbones, data_files
):
    """Sanity check and ``limit_val_batches`` score the questions they predicted; a full pass
    whose features miss a question is an error naming the counts (issue 11)."""
    dm = datamodule(backbones["bert"], data_files["v1"])
    dm.eval_batch_size = 4
    module = QALightningModule(backbones["bert"])
    trainer(limit_train_batches=1, num_sanity_val_steps=1).fit(module, datamodule=dm)
    assert len(module.evaluations["validation"].predictions) == len(dm.examples("validation")) == 18

    trainer(limit_val_batches=1).validate(module, datamodule=dm)
    assert 0 < len(module.evaluations["validation"].predictions) < 18

    first = dm.examples("validation")[0]["id"]
    dm._features["validation"] = dm.features("validation").filter(lambda f: f["example_index"] != 0)
    with pytest.raises(IncompleteEvaluationError, match=f"cover 17 of the 18 .*first '{first}'"):
        trainer().validate(module, datamodule=dm)


def test_span_loss_ignores_positions_past_the_sequence():
    logits = torch.randn(2, 5)
    far = torch.tensor([1, 9])
    expected = nn.functional.cross_entropy(logits[:1], far[:1])
    assert torch.allclose(span_loss(logits, logits, far, far), expected)


# ---------------------------------------------------------------- Longformer global attention
SEP, PAD = 2, 1


def test_global_attention_on_question_tokens_either_padding_side():
    ids = torch.tensor(
        [
            [0, 5, 6, SEP, SEP, 7, 8, 9, SEP, PAD, PAD],  # right padding
            [PAD, PAD, 0, 5, 6, SEP, SEP, 7, 8, 9, SEP],  # left padding
        ]
    )
    mask = global_attention_mask(ids, (ids != PAD).long(), SEP)
    assert mask.tolist() == [[1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0]]

    context_first = torch.tensor([[PAD, 0, 7, 8, 9, SEP, SEP, 5, 6, SEP]])
    mask = global_attention_mask(
        context_first, (context_first != PAD).long(), SEP, question_first=False
    )
    assert mask.tolist() == [[0, 1, 0, 0, 0, 0, 0, 1, 1, 0]]


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_global_attention_matches_longformer_features(backbones, padding_side):
    tokenizer = load_tokenizer(backbones["longformer"], padding_side=padding_side)
    records = make_records()[:4]
    features = prepare_train_features(columns(records), tokenizer, MAX_LENGTH, STRIDE)
    rows = [
        {"input_ids": ids, "attention_mask": am}
        for ids, am in zip(features["input_ids"], features["attention_mask"], strict=True)
    ]
    batch = QACollator(tokenizer)(rows)
    mask = global_attention_mask(
        batch["input_ids"],
        batch["attention_mask"],
        tokenizer.sep_token_id,
        InputLayout.of(tokenizer).question_first,
    ).bool()
    questions = {r["question"] for r in records}
    for ids, row_mask in zip(batch["input_ids"], mask, strict=True):
        chosen = ids[row_mask].tolist()
        assert chosen[0] == tokenizer.cls_token_id
        assert tokenizer.decode(chosen[1:]).strip() in questions


# ----------------------------------------------------------------------------- optimisation
@pytest.mark.parametrize("family", FAMILIES)
def test_param_groups_exclude_bias_and_norms(backbones, family):
    model = load_qa_model(backbones[family])
    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = param_groups(model, weight_decay=0.1)
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    decay_names = {names[id(p)] for p in decay["params"]}
    assert no_decay_names.isdisjoint(decay_names) and no_decay_names | decay_names == set(
        names.values()
    )
    assert any("LayerNorm" in n for n in no_decay_names) and any(
        n.endswith("bias") for n in no_decay_names
    )
    for name in decay_names:  # matrices only: embeddings, projections
        assert model.get_parameter(name).ndim == 2 and "norm" not in name.lower(), name


def test_linear_warmup_then_decay_to_zero_at_last_step():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = linear_warmup_decay(optimizer, num_training_steps=10, warmup_ratio=0.2)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([0.0, 0.5, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8])
    assert optimizer.param_groups[0]["lr"] == 0.0
    with pytest.raises(ValueError, match="not both"):
        linear_warmup_decay(optimizer, 10, warmup_steps=1, warmup_ratio=0.1)


def test_adam_gets_the_fused_kernel_unless_an_implementation_is_chosen(backbones):
    """torch's default AdamW on CPU is a per-parameter loop (about 6x slower for MiniLM)."""
    model = load_qa_model(backbones["bert"])
    adamw = {"_target_": "torch.optim.AdamW", "lr": 1e-3}
    assert build_optimizer(model, adamw).defaults["fused"] is True
    assert build_optimizer(model, {**adamw, "_target_": "torch.optim.Adam"}).defaults["fused"]
    for chosen in ({"fused": False}, {"fused": None}, {"foreach": True}):
        assert not build_optimizer(model, {**adamw, **chosen}).defaults["fused"], chosen
    assert not build_optimizer(model, adamw, prefer_fused=False).defaults["fused"]
    sgd = build_optimizer(model, {"_target_": "torch.optim.SGD", "lr": 0.1})
    assert sgd.defaults["fused"] is None  # only Adam/AdamW are given the fused kernel

    fused, plain = (build_optimizer(model, {**adamw, "fused": choice}) for choice in (True, False))
    model.zero_grad()
    for param in model.parameters():
        param.grad = torch.full_like(param, 0.01)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    fused.step()
    after_fused = {name: p.detach().clone() for name, p in model.named_parameters()}
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(before[name])
    plain.step()
    for name, param in model.named_parameters():  # the same update either way
        torch.testing.assert_close(param, after_fused[name])


def test_no_fused_optimizer_under_a_gradient_scaler(backbones):
    """fp16 with a scaler: Lightning cannot clip for an optimizer that unscales itself."""
    from types import SimpleNamespace

    from lightning.pytorch.plugins.precision import MixedPrecision

    module = QALightningModule(backbones["bert"], scheduler=None)
    scaler = torch.amp.GradScaler("cpu")
    module._trainer = SimpleNamespace(precision_plugin=MixedPrecision("16-mixed", "cpu", scaler))
    assert not module.configure_optimizers().defaults["fused"]
    module._trainer = SimpleNamespace(precision_plugin=MixedPrecision("bf16-mixed", "cpu"))
    assert module.configure_optimizers().defaults["fused"] is True


# ------------------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("family", FAMILIES)
def test_checkpoint_loads_offline_without_the_model_directory(
    backbones, tmp_path, monkeypatch, family
):
    source = tmp_path / "backbone"
    shutil.copytree(backbones[family], source)
    module = hydra.utils.instantiate(
        {
            "_target_": "qa_lightning.model.module.QALightningModule",
            "pretrained": str(source),
            "config_overrides": {"hidden_dropout_prob": 0.0},
            "optimizer": {
                "_target_": "torch.optim.AdamW",
                "_partial_": True,
                "lr": 1e-3,
                "fused": None,
            },
            "scheduler": {
                "_target_": "qa_lightning.model.optim.linear_warmup_decay",
                "_partial_": True,
                "warmup_ratio": 0.1,
            },
        }
    )
    batch = train_batch(str(source), n=3)
    loader = DataLoader([batch], batch_size=None)
    fit_trainer = trainer(max_steps=1, limit_val_batches=0, default_root_dir=tmp_path)
    fit_trainer.fit(module, train_dataloaders=loader)
    checkpoint = tmp_path / "last.ckpt"
    fit_trainer.save_checkpoint(checkpoint)

    shutil.rmtree(source)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = QALightningModule.load_from_checkpoint(checkpoint, weights_only=True)
    assert loaded.hparams.optimizer == {
        "_target_": "torch.optim.adamw.AdamW",
        "lr": 1e-3,
        "fused": None,
    }
    assert loaded.model.config.hidden_dropout_prob == 0.0
    module.eval(), loaded.eval()
    with torch.no_grad():
        for expected, actual in zip(module(batch), loaded(batch), strict=True):
            torch.testing.assert_close(actual, expected)


def test_gradient_checkpointing_and_compile(backbones):
    compiled = QALightningModule(backbones["bert"], compile=True)
    assert not any("_orig_mod" in key for key in compiled.state_dict())  # checkpoints stay portable
    for family in ("bert", "longformer"):
        module = QALightningModule(backbones[family], gradient_checkpointing=True)
        assert any(getattr(m, "gradient_checkpointing", False) for m in module.model.modules())
        batch = train_batch(backbones[family], n=2)
        span_loss(*module(batch), batch["start_positions"], batch["end_positions"]).backward()
        assert module.model.qa_outputs.weight.grad is not None


def test_save_hf_model_reloads(backbones, tmp_path):
    module = QALightningModule(backbones["bert"]).eval()
    tokenizer = load_tokenizer(backbones["bert"])
    out = module.save_hf_model(tmp_path / "export", tokenizer)
    assert (out / "model.safetensors").is_file()
    reloaded = load_qa_model(out).eval()
    batch = train_batch(str(out), n=2)
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(**module.model_inputs(batch)).start_logits, module(batch)[0]
        )


# ------------------------------------------------------------------------- backbone loading
def test_minilm_gets_a_fresh_qa_head_logged_once(caplog):
    with caplog.at_level(logging.INFO, logger="qa_lightning.model.backbone"):
        model = load_qa_model("minilm")
    assert model.config.model_type == "bert"
    assert [r.message for r in caplog.records if "QA head" in r.message] == [
        "minilm has no QA head: initialised a fresh one (qa_outputs.bias, qa_outputs.weight)."
    ]


def test_sdpa_where_supported_else_default(backbones, caplog):
    assert (
        load_qa_model(backbones["bert"], attn_implementation="sdpa").config._attn_implementation
        == "sdpa"
    )
    with caplog.at_level(logging.WARNING, logger="qa_lightning.model.backbone"):
        model = load_qa_model(backbones["longformer"], attn_implementation="sdpa")
    assert model.config._attn_implementation == "eager"
    assert "attn_implementation='sdpa' is not available" in caplog.text


def test_fewer_longformer_layers_keep_their_first_attention_windows(backbones):
    """A depth override alone (a thin debug model) fits Longformer's per-layer windows."""
    for random_init in (True, False):
        thin = load_qa_model(
            backbones["longformer"], config={"num_hidden_layers": 1}, random_init=random_init
        )
        assert thin.config.num_hidden_layers == 1 and thin.config.attention_window == [16]
    deeper = load_qa_model(
        backbones["longformer"], config={"num_hidden_layers": 3}, random_init=True
    )
    assert deeper.config.attention_window == [16, 16, 16]
    with pytest.raises(AssertionError, match="attention_window"):  # an explicit list stays
        load_qa_model(
            backbones["longformer"],
            config={"num_hidden_layers": 1, "attention_window": [16, 16]},
            random_init=True,
        )
    bert = load_qa_model(backbones["bert"], config={"num_hidden_layers": 1}, random_init=True)
    assert bert.config.num_hidden_layers == 1 and not hasattr(bert.config, "attention_window")


def test_random_init_from_config_dict():
    model = load_qa_model(
        None,
        config={
            "model_type": "bert",
            "vocab_size": 99,
            "hidden_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 32,
        },
    )
    assert model.config.hidden_size == 16


def _assert_offline_error(err: OfflineError, reason: str) -> None:
    message = str(err)
    for part in ("'bert-base-uncased'", reason, "model.pretrained=", "model=minilm"):
        assert part in message, message


def test_offline_flag_fails_fast_with_alternatives(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    for load in (
        load_qa_model,
        load_tokenizer,
        partial(load_qa_model, random_init=True),
        QALightningModule,
    ):
        with pytest.raises(OfflineError) as info:
            load("bert-base-uncased")
        _assert_offline_error(info.value, "HF_HUB_OFFLINE")
    assert time.monotonic() - start < 5


def test_unreachable_hub_fails_fast_with_alternatives(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    if hub_constants.HF_HUB_OFFLINE or hub_reachable():
        pytest.skip("needs a machine without access to the Hugging Face hub")
    start = time.monotonic()
    with pytest.raises(OfflineError) as info:
        load_qa_model("bert-base-uncased")
    _assert_offline_error(info.value, "unreachable")
    assert time.monotonic() - start < 10


def test_missing_local_directory_is_not_a_hub_name():
    with pytest.raises(FileNotFoundError, match="model directory not found"):
        load_qa_model("./no/such/model")
