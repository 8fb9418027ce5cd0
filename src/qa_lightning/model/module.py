"""``QALightningModule``: a question-answering backbone trained on span start/end cross-entropy."""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from lightning import LightningModule
from lightning.pytorch.plugins.precision import MixedPrecision
from lightning.pytorch.utilities import GradClipAlgorithmType
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from qa_lightning.data.features import InputLayout
from qa_lightning.metrics.answerability import Answerability, write_answerability
from qa_lightning.metrics.squad_metric import SquadMetric
from qa_lightning.model import checkpoint_format
from qa_lightning.model.backbone import load_qa_model
from qa_lightning.model.inputs import global_attention_mask
from qa_lightning.model.loss import position_accuracy, span_loss
from qa_lightning.model.model_card import Window, make_tokenizer_portable, write_window
from qa_lightning.model.optim import FactorySpec, build_optimizer, from_spec, to_plain, to_spec

if TYPE_CHECKING:
    import datasets

log = logging.getLogger(__name__)

DEFAULT_OPTIMIZER = {"_target_": "torch.optim.AdamW", "lr": 3e-5, "weight_decay": 0.01}
EVAL_KEYS = ("offset_mapping", "cls_index", "example_index", "feature_index")
# Official score names -> logged names (v2.0's "exact" is logged as exact_match like v1.1's).
LOG_NAMES = {"exact": "exact_match"}
PROG_BAR = ("exact_match", "f1")
ANSWERABILITY_KEY = "answerability"
STAGE_SPLITS = {"val": "validation", "test": "test"}
STAGE_PREFIXES = {"fit": ("val",), "validate": ("val",), "test": ("test",)}


@dataclass(frozen=True)
class Evaluation:
    """What one evaluation pass over a split gave: the module publishes one per evaluated split
    at the end of each validation / test epoch, in ``QALightningModule.evaluations[split]``.

    Attributes:
        split: ``"validation"`` or ``"test"``.
        metrics: the official figures under the official scripts' names (v1.1: ``exact_match``,
            ``f1``; v2.0: ``exact``, ``f1``, ``HasAns_*``, ``NoAns_*``, ``best_*``), as floats.
        predictions: ``{question_id: answer}``, ``""`` for no answer.
        na_probs: ``{question_id: no-answer probability}`` (v2.0; empty for v1.1).
        span_probs: ``{question_id: the best span's probability among the n-best}``, the raw
            confidence answerability calibration fits on (``training/callbacks/answerability``).
        span_answers: v2.0: ``{question_id: the best span}`` whatever the null rule decided.
        partial: Lightning ran only part of the loader (sanity check, ``fast_dev_run``, limited or
            overfit batches): the figures cover the questions predicted.
        spans: ``{question_id: (start_char, end_char, score)}`` of each best span.
        gold_answers: ``{question_id: gold texts}`` of the predicted questions.
    """

    split: str
    metrics: dict[str, float]
    predictions: dict[str, str]
    na_probs: dict[str, float] = field(default_factory=dict)
    partial: bool = False
    span_probs: dict[str, float] = field(default_factory=dict)
    span_answers: dict[str, str] = field(default_factory=dict)
    spans: dict[str, tuple[int, int, float]] = field(default_factory=dict)
    gold_answers: dict[str, list[str]] = field(default_factory=dict)


@runtime_checkable
class EvalData(Protocol):
    """What the module reads from ``trainer.datamodule`` (``SquadDataModule`` is one)."""

    @property
    def version_2(self) -> bool:
        """Whether the data has unanswerable questions (SQuAD v2.0 scoring)."""

    @property
    def input_layout(self) -> InputLayout:
        """The question/context order of the features."""

    def has_split(self, split: str) -> bool:
        """Whether the data has examples for ``split`` ("validation", "test")."""

    def examples(self, split: str) -> datasets.Dataset:
        """The examples of ``split``: ``id``, ``question``, ``context``, ``answers`` columns."""


class QALightningModule(LightningModule):
    """Extractive QA on top of ``AutoModelForQuestionAnswering``.

    Args:
        pretrained: hub name, local directory or ``"minilm"`` (see ``load_qa_model``).
        random_init: build from the (overridden) config of ``pretrained`` without its weights.
        config_overrides: fields of the model config to override (e.g. dropout, tiny sizes).
        optimizer: factory of the optimizer given the parameter groups (Hydra ``_partial_``),
            or a ``_target_`` mapping; default AdamW(lr=3e-5, weight_decay=0.01).
        scheduler: factory ``(optimizer, num_training_steps) -> LRScheduler`` stepped every
            optimizer step, e.g. ``qa_lightning.model.optim.linear_warmup_decay``; None: constant LR.
        version_2: SQuAD v2.0 scoring (unanswerable questions); None: the datamodule's version.
        question_first: question before context in the features; None: the datamodule's
            ``input_layout``, else True. Only Longformer's global attention uses it.
        hf_config: the backbone's config dict; set by checkpoints so that loading one builds the
            backbone from it instead of fetching ``pretrained``.
        max_length, doc_stride: the window the model is trained with (conf ``model_window``);
            recorded in ``hf_model/`` and used by inference. None: not recorded.
    """

    def __init__(
        self,
        pretrained: str,
        random_init: bool = False,
        config_overrides: dict[str, Any] | None = None,
        optimizer: FactorySpec | None = None,
        scheduler: FactorySpec | None = None,
        version_2: bool | None = None,
        n_best_size: int = 20,
        max_answer_length: int = 30,
        null_score_diff_threshold: float = 0.0,
        attn_implementation: str | None = None,
        gradient_checkpointing: bool = False,
        compile: bool = False,
        trust_remote_code: bool = False,
        question_first: bool | None = None,
        hf_config: dict[str, Any] | None = None,
        max_length: int | None = None,
        doc_stride: int | None = None,
    ) -> None:
        super().__init__()
        # Plain values only, so checkpoints are self-describing and load with weights_only=True:
        # save_hyperparameters() reads these rebound locals.
        optimizer = to_spec(optimizer if optimizer is not None else DEFAULT_OPTIMIZER)
        scheduler = to_spec(scheduler) if scheduler is not None else None
        config_overrides = to_plain(config_overrides)
        self.save_hyperparameters(ignore=["hf_config"])

        if hf_config is not None:
            self.model = load_qa_model(
                None,
                config=to_plain(hf_config),
                random_init=True,
                attn_implementation=attn_implementation,
                trust_remote_code=trust_remote_code,
            )
        else:
            self.model = load_qa_model(
                pretrained,
                config=config_overrides,
                random_init=random_init,
                attn_implementation=attn_implementation,
                trust_remote_code=trust_remote_code,
            )
        self.model.train()  # from_pretrained returns eval mode; Lightning keeps submodule modes
        if gradient_checkpointing:
            if self.model.supports_gradient_checkpointing:
                # transformers 5 renamed gradient_checkpointing_enable (kept as a deprecated alias)
                enable = getattr(self.model, "activation_checkpointing_enable", None)
                (enable or self.model.gradient_checkpointing_enable)()
            else:
                log.warning(
                    "%s does not support gradient checkpointing.", type(self.model).__name__
                )
        if compile:
            self.model.compile()  # in place: state_dict keys stay those of the uncompiled model

        accepted = inspect.signature(self.model.forward).parameters
        config = self.model.config
        self._use_token_type_ids = (
            "token_type_ids" in accepted and (getattr(config, "type_vocab_size", 0) or 0) > 1
        )
        self._use_global_attention = "global_attention_mask" in accepted
        self._sep_token_id = getattr(config, "sep_token_id", None) or getattr(
            config, "eos_token_id", None
        )
        if self._use_global_attention and self._sep_token_id is None:
            raise ValueError(f"{type(self.model).__name__} needs sep_token_id in its config.")

        self.input_layout = InputLayout(question_first=question_first is not False)
        self.version_2 = bool(version_2)
        self.metrics = nn.ModuleDict()
        self.evaluations: dict[str, Evaluation] = {}
        self.answerability: Answerability | None = None
        """Tuned threshold, calibrators and decoding settings (``metrics.answerability``)."""
        """The latest :class:`Evaluation` of each evaluated split ("validation", "test")."""

    # ------------------------------------------------------------------ model
    def model_inputs(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The backbone's inputs from a batch (token type ids and Longformer's global mask as needed)."""
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if self._use_token_type_ids and "token_type_ids" in batch:
            inputs["token_type_ids"] = batch["token_type_ids"]
        if self._use_global_attention:
            inputs["global_attention_mask"] = global_attention_mask(
                batch["input_ids"],
                batch["attention_mask"],
                self._sep_token_id,
                self.input_layout.question_first,
            )
        return inputs

    def forward(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Start and end logits ``[B, L]``."""
        output = self.model(**self.model_inputs(batch))
        return output.start_logits, output.end_logits

    def compute_loss(self, batch: Mapping[str, Tensor], start: Tensor, end: Tensor) -> Tensor:
        """The span loss of ``batch`` given its start and end logits (training and evaluation)."""
        return span_loss(start, end, batch["start_positions"], batch["end_positions"])

    # --------------------------------------------------------------- training
    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        start, end = self(batch)
        loss = self.compute_loss(batch, start, end)
        size = batch["input_ids"].size(0)
        epoch_and_step = dict(on_step=True, on_epoch=True, sync_dist=True, batch_size=size)
        self.log("train/loss", loss, prog_bar=True, **epoch_and_step)
        self.log_dict(
            {
                "train/start_acc": position_accuracy(start, batch["start_positions"]),
                "train/end_acc": position_accuracy(end, batch["end_positions"]),
            },
            **epoch_and_step,
        )
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        self.log("train/lr", lr, on_step=True, on_epoch=False, batch_size=size)
        return loss

    def configure_optimizers(self) -> Any:
        plugin = self._trainer.precision_plugin if self._trainer is not None else None
        scaled = isinstance(plugin, MixedPrecision) and plugin.scaler is not None
        optimizer = build_optimizer(self.model, self.hparams.optimizer, prefer_fused=not scaled)
        if self.hparams.scheduler is None:
            return optimizer
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ValueError("The scheduler needs a finite number of steps: set trainer.max_steps.")
        scheduler = from_spec(self.hparams.scheduler)(optimizer, num_training_steps=int(total))
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def configure_gradient_clipping(
        self,
        optimizer: Any,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Lightning's clipping, except for a fused optimizer (``AdamW(fused=True)``) under
        ``bf16-mixed``: Lightning's mixed-precision plugin refuses to clip for any optimizer that
        unscales gradients itself, but bf16 has no gradient scaler, so the gradients are already
        true values and clipping them here is exact. fp16 (a scaler) keeps Lightning's error."""
        plugin = self.trainer.precision_plugin
        if (
            gradient_clip_val
            and getattr(optimizer, "_step_supports_amp_scaling", False)
            and isinstance(plugin, MixedPrecision)
            and plugin.scaler is None
        ):
            params = [p for group in optimizer.param_groups for p in group["params"]]
            if gradient_clip_algorithm == GradClipAlgorithmType.VALUE:
                nn.utils.clip_grad_value_(params, gradient_clip_val)
            else:
                nn.utils.clip_grad_norm_(params, gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    # ------------------------------------------------------------- evaluation
    def setup(self, stage: str) -> None:
        """Take the data's version and input layout (unless given), and give the metrics their
        examples; without a datamodule, examples come from :meth:`set_eval_examples`."""
        data = self.trainer.datamodule
        if data is None:
            return
        if not isinstance(data, EvalData):
            raise TypeError(
                f"{type(data).__name__} does not provide what QALightningModule reads from its "
                "datamodule (EvalData: version_2, input_layout, has_split(), examples())"
            )
        if self.hparams.version_2 is None:
            self.version_2 = bool(data.version_2)
        self.use_input_layout(data.input_layout)
        for prefix in STAGE_PREFIXES.get(stage, ()):
            split = STAGE_SPLITS[prefix]
            if data.has_split(split):
                self.set_eval_examples(prefix, data.examples(split))

    def use_input_layout(self, layout: InputLayout) -> None:
        """The question/context order of the features fed to the model (made with the tokenizer
        beside it), unless ``question_first`` was given."""
        if self.hparams.question_first is None:
            self.input_layout = layout

    def set_eval_examples(self, prefix: str, examples: Any) -> None:
        """A fresh ``prefix`` ("val" / "test") metric scoring ``examples`` (a ``datasets.Dataset``)."""
        metric = SquadMetric(
            version_2=self.version_2,
            n_best_size=self.hparams.n_best_size,
            max_answer_length=self.hparams.max_answer_length,
            null_score_diff_threshold=self.hparams.null_score_diff_threshold,
            keep_nbest=True,
        )
        metric.set_examples(
            list(examples["id"]),
            list(examples["context"]),
            [list(answers["text"]) for answers in examples["answers"]],
        )
        self.metrics[prefix] = metric.to(self.device)

    def _eval_step(self, prefix: str, batch: Mapping[str, Tensor]) -> None:
        start, end = self(batch)
        if "start_positions" in batch:
            loss = self.compute_loss(batch, start, end)
            self.log_dict(
                {
                    f"{prefix}/loss": loss,
                    f"{prefix}/start_acc": position_accuracy(start, batch["start_positions"]),
                    f"{prefix}/end_acc": position_accuracy(end, batch["end_positions"]),
                },
                on_epoch=True,
                sync_dist=True,
                batch_size=start.size(0),
            )
        if prefix not in self.metrics:
            raise RuntimeError(
                f"No {prefix} examples to score: use an EvalData datamodule or call "
                f"set_eval_examples({prefix!r}, examples)."
            )
        self.metrics[prefix].update(
            start, end, *(batch[key] for key in EVAL_KEYS), attention_mask=batch["attention_mask"]
        )

    def _eval_epoch_end(self, prefix: str) -> None:
        metric = self.metrics[prefix]
        metric.partial = self._runs_part_of_the_loader(prefix)
        results = metric.compute()
        evaluation = Evaluation(
            split=STAGE_SPLITS[prefix],
            metrics={key: float(value) for key, value in results.items()},
            predictions=dict(metric.predictions),
            na_probs=dict(metric.na_probs or {}),
            partial=metric.partial,
            span_probs=dict(metric.span_probs),
            span_answers=dict(metric.span_answers),
            spans=dict(metric.spans),
            gold_answers={q: g for q, g in metric.gold_answers.items() if q in metric.predictions},
        )
        self.evaluations[evaluation.split] = evaluation
        for key, value in evaluation.metrics.items():
            name = LOG_NAMES.get(key, key)
            self.log(
                f"{prefix}/{name}", value, on_epoch=True, sync_dist=True, prog_bar=name in PROG_BAR
            )
        metric.reset()

    def _runs_part_of_the_loader(self, prefix: str) -> bool:
        """Whether Lightning runs only some eval batches: sanity check, ``fast_dev_run``,
        ``overfit_batches`` or ``limit_val/test_batches`` (an ``int``, or a fraction under 1)."""
        trainer = self._trainer
        if trainer is None:
            return False
        if trainer.sanity_checking or trainer.fast_dev_run or trainer.overfit_batches:
            return True
        limit = trainer.limit_test_batches if prefix == "test" else trainer.limit_val_batches
        return isinstance(limit, int) or limit < 1.0

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self._eval_step("test", batch)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    # ------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the backbone's config (``load_from_checkpoint`` then needs no hub or model files)
        and the checkpoint format version."""
        checkpoint.setdefault("hyper_parameters", {})["hf_config"] = self.model.config.to_dict()
        checkpoint_format.stamp(checkpoint)
        if self.answerability is not None:
            checkpoint[ANSWERABILITY_KEY] = self.answerability.to_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Migrate an older format and check that the weights fit this model, before they load;
        take the tuned answerability, when the checkpoint holds one."""
        checkpoint_format.migrate(checkpoint)
        for name in checkpoint_format.HPARAM_SPECS:  # this module's own copy, when read before
            if name in self.hparams:
                self.hparams[name] = checkpoint_format.retarget(
                    self.hparams[name], checkpoint_format.MOVED_TARGETS[1]
                )
        checkpoint_format.check_backbone(
            checkpoint, self.state_dict(), self.model.config.model_type
        )
        if checkpoint.get(ANSWERABILITY_KEY) is not None:
            self.answerability = Answerability.from_dict(
                checkpoint[ANSWERABILITY_KEY], source="checkpoint"
            )

    def save_hf_model(
        self, directory: str | Path, tokenizer: PreTrainedTokenizerBase | None = None
    ) -> Path:
        """Write the backbone (safetensors), ``tokenizer`` and the training window, loadable by
        ``from_pretrained`` of transformers 5 and 4.x (see :mod:`qa_lightning.model.model_card`),
        and ``answerability.json`` when the module has tuned values."""
        directory = Path(directory)
        self.model.save_pretrained(directory)
        if self.answerability is not None:
            write_answerability(directory, self.answerability)
        if tokenizer is not None:
            tokenizer.save_pretrained(directory)
            make_tokenizer_portable(directory, self.model, tokenizer)
        window = self.window
        if window is not None:
            write_window(directory, window)
        return directory

    @property
    def window(self) -> Window | None:
        """The window the model was trained with, when known."""
        max_length, doc_stride = self.hparams.get("max_length"), self.hparams.get("doc_stride")
        if max_length is None:
            return None
        stride = min(128, max_length // 2) if doc_stride is None else doc_stride
        return Window(max_length=int(max_length), doc_stride=int(stride))
