"""A new user's bad data through ``python -m qa_lightning``: the project's error alone, exit 1;
``HYDRA_FULL_ERROR=1`` brings the traceback back."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import pytest

RECORD = {
    "title": "t",
    "context": "Rollo led.",
    "question": "Who?",
    "answers": {"text": ["Rollo"], "answer_start": [0]},
}
NESTED = {
    "version": "1.1",
    "data": [
        {
            "title": "t",
            "paragraphs": [
                {
                    "context": "Rollo led.",
                    "qas": [
                        {
                            "id": "q1",
                            "question": "Who?",
                            "answers": [{"text": "Rollo", "answer_start": 0}],
                        }
                    ],
                }
            ],
        }
    ],
}


def run(tmp_path, data_file, full_error: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    if full_error:
        env["HYDRA_FULL_ERROR"] = "1"
    cmd = [sys.executable, "-m", "qa_lightning", "data=files", f"data.train_file={data_file}"]
    cmd += [f"data.validation_file={data_file}", "model=minilm", "+trainer.fast_dev_run=1"]
    cmd += [f"paths.output_dir={tmp_path / 'out'}", "logger=csv"]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("noid.jsonl", json.dumps(RECORD) + "\n", "field 'id': line 1 has no 'id'"),
        pytest.param(
            "cut.json.gz",
            gzip.compress(json.dumps(NESTED).encode())[:-30],
            "corrupt or truncated gzip",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_project_errors_print_alone(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    proc = run(tmp_path, path)
    assert proc.returncode == 1
    assert f"Error: file {path}" in proc.stderr and message in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.slow
def test_full_error_keeps_the_traceback(tmp_path):
    path = tmp_path / "noid.jsonl"
    path.write_text(json.dumps(RECORD) + "\n")
    proc = run(tmp_path, path, full_error=True)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "DataFormatError" in proc.stderr
