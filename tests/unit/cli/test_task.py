"""``task_wrapper``'s handling of the project's errors: the message alone, exit 1."""

from __future__ import annotations

import pytest

from qa_lightning.cli.task import exit_on_project_error
from qa_lightning.errors import DataFormatError


def test_project_error_prints_alone_and_exits_1(monkeypatch, capsys):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_info, exit_on_project_error():
        raise DataFormatError("line 1 has no 'id'", path="train.jsonl", field="id")
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: file train.jsonl, field 'id': line 1 has no 'id'")
    assert "Traceback" not in err


def test_full_error_raises_and_other_errors_pass(monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(DataFormatError), exit_on_project_error():
        raise DataFormatError("bad", path="x.json")
    monkeypatch.delenv("HYDRA_FULL_ERROR")
    with pytest.raises(KeyError), exit_on_project_error():
        raise KeyError("not ours: Hydra reports it as before")
