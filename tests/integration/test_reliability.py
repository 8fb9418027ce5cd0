"""Faults, bad files and inputs, and safety: what a crash, a NaN, a full disk or a hostile file do."""

from __future__ import annotations

import ast
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import REPO, TESTS_DIR
from helpers.app import compose_run_cfg, resume_run_overrides, slice_squad, v1_train_val
from helpers.tokenizers import minilm_tokenizer
from qa_lightning.cli import train
from qa_lightning.data.loader import ResumableDataLoader
from qa_lightning.errors import DataFormatError, QALightningError
from qa_lightning.inference.loading import load_module
from qa_lightning.model.module import QALightningModule
from qa_lightning.training.callbacks.finite_loss import NonFiniteLossError
from qa_lightning.training.checkpoint_io import AtomicCheckpointIO, CheckpointWriteError
from qa_lightning.training.resume import newest_checkpoint, resume_checkpoint
from qa_lightning.utils.io import remove_stale_temp_files
from qa_lightning.utils.secrets import redact

EVERY = 4  # checkpoint_every_n_steps: an epoch has 13 steps, so these are mid-epoch


@pytest.fixture(scope="module")
def files(tmp_path_factory, shared_data) -> dict[str, Path]:
    return v1_train_val(shared_data, tmp_path_factory.mktemp("squad"), 64, 32)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def overrides(
    model: Path, files: dict[str, Path], cache: Path, out: Path, *extra: str
) -> list[str]:
    return [
        *resume_run_overrides(model, files, cache, out, trainer="cpu", batch=8, every=EVERY),
        *extra,
    ]


def run_in_process(model, files, cache, out: Path, *extra: str) -> dict:
    return train.run(compose_run_cfg(overrides(model, files, cache, out, *extra), out))


def load_ckpt(path: Path) -> dict:
    return torch.load(path, weights_only=True, map_location="cpu")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def uninterrupted(tiny_bert, files, cache, tmp_path_factory) -> Path:
    """One whole deterministic run (dropout on) every resume is compared with."""
    out = tmp_path_factory.mktemp("whole")
    run_in_process(tiny_bert, files, cache, out)
    return out


def assert_same_training(run: Path, reference: Path) -> None:
    """Same final step, last training loss and weights (bit for bit)."""
    got, expected = (json.loads((d / "training.json").read_text()) for d in (run, reference))
    assert got["global_step"] == expected["global_step"]
    assert got["last_loss"] == expected["last_loss"]
    state = load_ckpt(run / "checkpoints" / "last.ckpt")
    reference_state = load_ckpt(reference / "checkpoints" / "last.ckpt")
    assert state["global_step"] == reference_state["global_step"]
    for key, value in reference_state["state_dict"].items():
        assert torch.equal(state["state_dict"][key], value), key


def assert_same_outcome(run: Path, reference: Path) -> None:
    """Same training (see above) and the same EM/F1."""
    assert_same_training(run, reference)
    assert json.loads((run / "metrics.json").read_text()) == json.loads(
        (reference / "metrics.json").read_text()
    )


# ---------------------------------------------------------------------------------- faults
def test_sigkill_mid_epoch_then_resume_reaches_the_same_result(
    tiny_bert, files, cache, uninterrupted, tmp_path
):
    """A process killed halfway through writing its second mid-epoch checkpoint resumes with
    ``ckpt_path=last`` to the same final step, loss, EM/F1 and weights as an uninterrupted run."""
    out = tmp_path / "run"
    secret = "secret-0123456789abcdef"
    killed = [
        sys.executable,
        "-m",
        "qa_lightning",
        *overrides(tiny_bert, files, cache, out),
        "+callbacks.kill._target_=helpers.reliability.SigkillDuringSave",
        "+callbacks.kill.at_save=4",  # step000004.ckpt, last.ckpt; step000008.ckpt, last.ckpt
        "+probe_value=${oc.env:WANDB_API_KEY}",
        f"hydra.run.dir={out}",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]),
        "WANDB_API_KEY": secret,
    }
    proc = subprocess.run(
        killed, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]

    checkpoints = out / "checkpoints"
    assert load_ckpt(checkpoints / "last.ckpt")["global_step"] == EVERY  # the previous one, intact
    assert [p.name for p in checkpoints.glob(".last.ckpt.*.tmp")], "the half-written file"
    assert not (out / "metrics.json").exists()
    # the saved config keeps the interpolation; no file holds the secret's value
    assert "${oc.env:WANDB_API_KEY}" in (out / ".hydra" / "config.yaml").read_text()
    for path in out.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), f"secret leaked into {path}"

    run_in_process(tiny_bert, files, cache, out, "ckpt_path=last")
    assert not list(checkpoints.glob(".*.tmp")), "stale temporary files are cleaned up"
    assert_same_outcome(out, uninterrupted)
    final_step = json.loads((out / "training.json").read_text())["global_step"]
    newest_step = sorted(p.name for p in checkpoints.glob("step*.ckpt"))[-1]
    assert newest_step == f"step{final_step - final_step % EVERY:06d}.ckpt"


def killed_run(tiny_bert, files, cache, out: Path, *extra: str, wait_for: str | None = None):
    """Run ``python -m qa_lightning`` in a subprocess that gets SIGKILLed (by a helper callback,
    or from here once ``wait_for`` exists under the run directory)."""
    cmd = [
        sys.executable,
        "-m",
        "qa_lightning",
        *overrides(tiny_bert, files, cache, out),
        *extra,
        f"hydra.run.dir={out}",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        cmd, cwd=out.parent, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    if wait_for is not None:
        deadline = time.monotonic() + 300
        while not (out / wait_for).exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL, stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize(
    "kill",
    [
        [
            "+callbacks.kill._target_=helpers.reliability.SigkillAt",
            "+callbacks.kill.hook=on_validation_start",
        ],
        [
            "+callbacks.kill._target_=helpers.reliability.SigkillAt",
            "+callbacks.kill.hook=on_train_epoch_start",
            "+callbacks.kill.epoch=1",
        ],
        ["+callbacks.slow._target_=helpers.reliability.SlowSteps", "+callbacks.slow.seconds=0.3"],
    ],
    ids=["during-validation", "at-the-next-epoch-start", "external-after-first-checkpoint"],
)
def test_sigkill_at_other_points_then_resume_reaches_the_same_result(
    tiny_bert, files, cache, uninterrupted, tmp_path, kill
):
    out = tmp_path / "run"
    wait_for = "checkpoints/step000004.ckpt" if "SlowSteps" in kill[0] else None
    killed_run(tiny_bert, files, cache, out, *kill, wait_for=wait_for)
    assert (out / "checkpoints" / "last.ckpt").is_file()
    run_in_process(tiny_bert, files, cache, out, "ckpt_path=last")
    assert_same_outcome(out, uninterrupted)


def test_auto_resume_continues_from_the_newest_checkpoint(
    tiny_bert, files, cache, uninterrupted, tmp_path
):
    """``auto_resume=true`` with no ``ckpt_path`` picks up the run directory's newest checkpoint
    (here a mid-epoch one of the uninterrupted run) and finishes exactly as that run did."""
    out = tmp_path / "run"
    older = sorted((uninterrupted / "checkpoints").glob("step*.ckpt"))[0]
    (out / "checkpoints").mkdir(parents=True)
    shutil.copy(older, out / "checkpoints" / older.name)
    run_in_process(tiny_bert, files, cache, out, "auto_resume=true")
    assert_same_training(out, uninterrupted)


def test_newest_checkpoint_ignores_temporary_files_and_prefers_last(tmp_path):
    assert newest_checkpoint(tmp_path / "missing") is None
    assert resume_checkpoint(None, True, tmp_path) is None
    step, last, tmp = (
        tmp_path / "step000004.ckpt",
        tmp_path / "last.ckpt",
        tmp_path / ".last.ckpt.x.tmp",
    )
    for path in (step, last, tmp):
        path.write_bytes(b"x")
    os.utime(step, ns=(10**18, 10**18))
    os.utime(last, ns=(10**18, 10**18))
    os.utime(tmp, ns=(2 * 10**18, 2 * 10**18))
    assert newest_checkpoint(tmp_path) == last
    assert resume_checkpoint(None, True, tmp_path) == str(last)
    assert resume_checkpoint("given.ckpt", True, tmp_path) == "given.ckpt"
    assert resume_checkpoint(None, False, tmp_path) is None
    assert remove_stale_temp_files(tmp_path) == [tmp] and not tmp.exists()


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
    tiny_bert, files, cache, tmp_path, monkeypatch
):
    original = QALightningModule.compute_loss

    def nan_at_step_6(self, batch, start, end):
        loss = original(self, batch, start, end)
        return loss * float("nan") if self.global_step == 6 else loss

    monkeypatch.setattr(QALightningModule, "compute_loss", nan_at_step_6)
    out = tmp_path / "run"
    with pytest.raises(
        NonFiniteLossError, match=r"loss is nan at global step 6 \(epoch 0, batch 6\)"
    ) as info:
        run_in_process(tiny_bert, files, cache, out)
    assert "last.ckpt" in str(info.value) or "step000004.ckpt" in str(info.value)
    last = load_ckpt(out / "checkpoints" / "last.ckpt")
    assert last["global_step"] == EVERY
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values())
    assert not (out / "metrics.json").exists() and not (out / "hf_model").exists()


def test_loss_guard_ignores_fp16_gradient_overflow(tmp_path):
    """A finite loss whose fp16 gradients overflow: the precision plugin's gradient scaler skips
    those steps and lowers its scale; the guard does not stop training."""
    import lightning as L
    from lightning.pytorch.plugins.precision import MixedPrecision
    from torch import nn

    from qa_lightning.training.callbacks.finite_loss import FiniteLossGuard

    class Overflowing(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(4, 1)
            self.losses: list[float] = []

        def training_step(self, batch, batch_idx):
            loss = self.layer(batch).float().mean() * 1e4  # x 65536 (initial scale) overflows fp16
            self.losses.append(float(loss))
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=1e-3)

    model = Overflowing()
    # Lightning maps 16-mixed on CPU to bf16 (no scaler): build the fp16 plugin explicitly
    fp16 = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    trainer = L.Trainer(
        accelerator="cpu",
        plugins=[fp16],
        max_steps=3,
        callbacks=[FiniteLossGuard()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, torch.utils.data.DataLoader(torch.ones(8, 4), batch_size=2))
    assert trainer.global_step == 3 and len(set(model.losses)) == 1  # every step was skipped
    assert fp16.scaler.get_scale() == 2.0**16 / 8  # the scaler saw the overflows and backed off


def test_full_disk_while_saving_is_reported_and_keeps_the_previous_checkpoint(
    tiny_bert, files, cache, tmp_path, monkeypatch
):
    real_save, calls, before = torch.save, [], {}

    def save(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) == 4:  # step000004, last, step000008, then last.ckpt again: full disk
            last = Path(f).parent / "last.ckpt"
            before["digest"] = digest(last)
            Path(f).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    out = tmp_path / "run"
    with pytest.raises(CheckpointWriteError) as info:
        run_in_process(tiny_bert, files, cache, out)
    message = str(info.value)
    assert (
        "no space left on device (ENOSPC)" in message and "the previous file is intact" in message
    )
    assert str(out / "checkpoints" / "last.ckpt") in message
    assert digest(out / "checkpoints" / "last.ckpt") == before["digest"]
    assert load_ckpt(out / "checkpoints" / "last.ckpt")["global_step"] == EVERY
    assert not list((out / "checkpoints").glob(".*.tmp"))


def test_atomic_checkpoint_io_replaces_in_one_step(tmp_path, monkeypatch):
    io_plugin = AtomicCheckpointIO()
    path = tmp_path / "ckpts" / "last.ckpt"
    io_plugin.save_checkpoint({"step": torch.tensor(1)}, path)
    assert io_plugin.load_checkpoint(path)["step"] == 1

    def failing(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half")
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(torch, "save", failing)
    with pytest.raises(CheckpointWriteError, match="permission denied"):
        io_plugin.save_checkpoint({"step": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert io_plugin.load_checkpoint(path)["step"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_unwritable_output_directory_fails_at_start_up(tiny_bert, files, cache, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    out = blocker / "run"
    with pytest.raises(QALightningError, match=r"output directory .*a-file/run is not writable"):
        run_in_process(tiny_bert, files, cache, out)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits")
def test_read_only_output_directory_fails_at_start_up(tiny_bert, files, cache, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    out.chmod(0o500)
    try:
        with pytest.raises(QALightningError, match="permission denied"):
            run_in_process(tiny_bert, files, cache, out)
    finally:
        out.chmod(0o700)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resumable_loader_skips_consumed_batches(num_workers):
    from qa_lightning.data.samplers import SeededRandomSampler

    def loader() -> ResumableDataLoader:
        return ResumableDataLoader(
            list(range(40)),
            batch_size=4,
            sampler=SeededRandomSampler(40, seed=3),
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
        )

    whole = loader()
    whole.sampler.set_epoch(1)
    batches = [b.tolist() for b in whole]
    first = loader()
    first.sampler.set_epoch(1)
    iterator = iter(first)
    [next(iterator) for _ in range(3)]
    state = first.state_dict()
    assert state == {"batches_consumed": 3}

    resumed = loader()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(1)
    assert [b.tolist() for b in resumed] == batches[3:]
    resumed.sampler.set_epoch(2)
    assert len([b.tolist() for b in resumed]) == 10  # later passes are whole


# --------------------------------------------------------------------------------- safety
class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_checkpoint_with_a_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": Payload()}}, path)
    with pytest.raises(
        QALightningError, match=r"refusing to load .*evil\.ckpt.*GLOBAL posix\.system"
    ):
        load_module(path)


def test_model_directory_with_a_pickled_object_is_refused(tmp_path):
    from transformers import BertConfig

    BertConfig(
        vocab_size=50,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=1,
        intermediate_size=8,
    ).save_pretrained(tmp_path)
    torch.save({"x": Payload()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(QALightningError, match="refusing to load"):
        load_module(tmp_path)


def test_run_outputs_are_safetensors_and_weights_only_loadable(uninterrupted):
    names = {p.name for p in (uninterrupted / "hf_model").iterdir()}
    assert "model.safetensors" in names
    assert not {n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl", ".pickle"))}
    for ckpt in (uninterrupted / "checkpoints").glob("*.ckpt"):
        load_ckpt(ckpt)  # weights_only=True: plain values and tensors only
    assert load_module(uninterrupted / "hf_model").hparams.trust_remote_code is False


def _trust_remote_code_defaults() -> list[tuple[str, object]]:
    """Every default or literal given to ``trust_remote_code`` in src/ (Python) and conf/ (YAML)."""
    found: list[tuple[str, object]] = []
    for path in (REPO / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.arguments):
                positional = node.posonlyargs + node.args
                named = positional[len(positional) - len(node.defaults) :]
                pairs = [*zip(named, node.defaults, strict=True)]
                pairs += [*zip(node.kwonlyargs, node.kw_defaults, strict=True)]
                found += [
                    (f"{path.name}:{arg.lineno}", ast.literal_eval(default))
                    for arg, default in pairs
                    if arg.arg == "trust_remote_code" and default is not None
                ]
            elif (
                isinstance(node, ast.keyword)
                and node.arg == "trust_remote_code"
                and isinstance(node.value, ast.Constant)
            ):
                found.append((f"{path.name}:{node.value.lineno}", node.value.value))
    for path in (REPO / "conf").rglob("*.yaml"):
        found += [
            (path.name, m.group(1))
            for m in re.finditer(r"trust_remote_code:\s*(\S+)", path.read_text())
        ]
    return found


def test_trust_remote_code_is_never_on_by_default():
    defaults = _trust_remote_code_defaults()
    assert defaults, "the scan found the parameter"
    assert all(value in (False, "false") for _, value in defaults), defaults


def test_secrets_from_the_environment_are_redacted_wherever_they_appear(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefghijklmnop")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    config = {"wandb": {"api_key": "x"}, "note": "uses hf_abcdefghijklmnop", "flag": "false"}
    assert redact(config) == {
        "wandb": {"api_key": "<redacted>"},
        "note": "<redacted>",
        "flag": "false",
    }


# ------------------------------------------------------------------------------ bad files
def test_version_2_false_on_v2_data_is_an_error(shared_data, tmp_path):
    from qa_lightning.data.datamodule import SquadDataModule
    from qa_lightning.paths import minilm_dir

    v2 = slice_squad(shared_data / "squad" / "dev-v2.0.json.gz", tmp_path / "v2.json", 0, 40)
    module = SquadDataModule(
        str(minilm_dir()), dataset=None, validation_file=str(v2), version_2=False, use_cache=False
    )
    with pytest.raises(DataFormatError, match=r"v2\.json.*version_2=false.*unanswerable"):
        module.setup("validate")


def test_version_2_true_on_v1_data_is_scored_by_v2_rules_with_a_warning(
    shared_data, tmp_path, caplog
):
    from qa_lightning.data.datamodule import SquadDataModule
    from qa_lightning.paths import minilm_dir

    v1 = slice_squad(shared_data / "squad" / "dev-v1.1.json.gz", tmp_path / "v1.json", 0, 20)
    module = SquadDataModule(
        str(minilm_dir()), dataset=None, validation_file=str(v1), version_2=True, use_cache=False
    )
    module.setup("validate")
    assert module.version_2 and "no question is unanswerable" in caplog.text


# ------------------------------------------------------------------------- predict inputs
@pytest.fixture(scope="module")
def tiny_minilm(tmp_path_factory) -> Path:
    """A tiny random BERT QA model with the packaged MiniLM tokenizer (no shared data needed)."""
    from transformers import AutoModelForQuestionAnswering, BertConfig

    directory = tmp_path_factory.mktemp("tiny_minilm")
    tokenizer = minilm_tokenizer()
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    AutoModelForQuestionAnswering.from_config(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def predict_cfg(tmp_path: Path, *overrides: str):
    return compose_run_cfg(list(overrides), tmp_path, name="predict")


def test_predict_without_a_context_is_a_clear_error(tiny_minilm, tmp_path):
    from qa_lightning.cli import predict
    from qa_lightning.inference import QuestionAnswerer

    with pytest.raises(QALightningError, match="question= needs context="):
        predict.run(predict_cfg(tmp_path, f"model_path={tiny_minilm}", "question=Who?"))
    qa = QuestionAnswerer.from_pretrained(tiny_minilm)
    for context in ("", "   ", None):
        with pytest.raises(DataFormatError, match="context"):
            qa.answer("Who?", context)


def _peak_rss_mb() -> float | None:
    status = Path("/proc/self/status")
    if not status.exists():
        return None
    match = re.search(r"VmHWM:\s+(\d+) kB", status.read_text())
    return int(match.group(1)) / 1024 if match else None


def test_predict_on_a_one_megabyte_context_answers_within_bounded_memory(tiny_minilm):
    from qa_lightning.inference import QuestionAnswerer

    qa = QuestionAnswerer.from_pretrained(tiny_minilm)
    sentence = "The quick brown fox jumps over the lazy dog near the river bank. "
    context = sentence * (1_000_000 // len(sentence)) + "Ada Lovelace wrote the first program."
    clear_refs = Path("/proc/self/clear_refs")
    measured = clear_refs.exists() and os.access(clear_refs, os.W_OK)
    if measured:
        clear_refs.write_text("5")  # reset the peak resident size (VmHWM)
        before = _peak_rss_mb()
    answers = qa.answer("Who wrote the first program?", context, top_k=3)
    assert 1 <= len(answers) <= 3
    for answer in answers:
        assert context[answer["start"] : answer["end"]] == answer["answer"] != ""
    if measured and before is not None:
        growth = _peak_rss_mb() - before
        assert growth < 1024, f"peak memory grew by {growth:.0f} MB for a 1 MB context"


def test_predict_non_utf8_input_is_a_clear_error(tiny_minilm, tmp_path):
    from qa_lightning.cli import predict
    from qa_lightning.inference import QuestionAnswerer

    bad = tmp_path / "questions.jsonl"
    bad.write_bytes(b'{"id": "1", "question": "Who?", "context": "caf\xe9 owner", "answers": []}\n')
    with pytest.raises(DataFormatError, match=r"questions\.jsonl.*invalid UTF-8 at byte 47"):
        predict.run(predict_cfg(tmp_path, f"model_path={tiny_minilm}", f"input_file={bad}"))
    # bytes that are not UTF-8 on the command line reach Python as lone surrogates
    context = b"the caf\xe9 owner".decode("utf-8", errors="surrogateescape")
    with pytest.raises(DataFormatError, match="context"):
        QuestionAnswerer.from_pretrained(tiny_minilm).answer("Who?", context)
