"""The official SQuAD v1.1 / v2.0 scoring (``metrics/squad_eval.py``) and its CLI (``score.py``)."""

from __future__ import annotations

import functools
import gzip
import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from qa_lightning.cli.score import main
from qa_lightning.errors import DataFormatError
from qa_lightning.metrics.squad_eval import (
    MissingPredictionWarning,
    compute_exact,
    compute_f1,
    exact_match_score,
    f1_score,
    get_tokens,
    load_gold,
    normalize_answer,
    score_predictions,
)

PREDICTION_FILES = [
    "v1.1-bert-ensemble.json",
    "v1.1-logistic-regression.json",
    "v1.1-match-lstm.json",
    "v1.1-rnet-ensemble.json",
    "v1.1-slqa-ensemble.json",
    "v2.0-bert-single.json",
    "v2.0-bidaf-elmo.json",
    "v2.0-nlnet-single.json",
]
TOL = 1e-9


# --- helpers ----------------------------------------------------------------------------------


def _squad(qas: list[dict[str, Any]], version: str | None = "1.1") -> dict[str, Any]:
    """A one-article, one-paragraph data file in the official layout."""
    data = {"data": [{"title": "T", "paragraphs": [{"context": "c", "qas": qas}]}]}
    return data if version is None else {"version": version, **data}


def _qa(qid: str, *texts: str, **extra: Any) -> dict[str, Any]:
    answers = [{"text": text, "answer_start": 0} for text in texts]
    return {"id": qid, "question": "q?", "answers": answers, **extra}


def _write_json(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def _assert_official(result: dict[str, Any], expected: dict[str, Any]) -> None:
    assert list(result) == list(expected)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=0, abs=TOL), key


def _run_cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- the official leaderboard figures ---------------------------------------------------------


@pytest.fixture(scope="module")
def official(shared_data: Path) -> dict[str, dict[str, Any]]:
    return json.loads((shared_data / "leaderboard" / "official_scores.json").read_text())


@pytest.fixture(scope="module")
def gold_for(shared_data: Path):
    return functools.cache(lambda name: load_gold(shared_data / "squad" / name))


def _case(official: dict, shared_data: Path, name: str) -> tuple[Path, Path, dict[str, Any]]:
    expected = dict(official[name])
    data_file = shared_data / "squad" / expected.pop("dataset")
    return data_file, shared_data / "leaderboard" / name, expected


def test_official_scores_cover_the_eight_files(official: dict) -> None:
    assert sorted(official) == PREDICTION_FILES


@pytest.mark.parametrize("name", PREDICTION_FILES)
def test_api_reproduces_official_scores(name: str, official: dict, shared_data: Path, gold_for):
    data_file, pred_file, expected = _case(official, shared_data, name)
    gold, version = gold_for(data_file.name)
    assert version == name[1:4]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingPredictionWarning)
        result = score_predictions(gold, json.loads(pred_file.read_text()), version=version)
    _assert_official(result, expected)


@pytest.mark.parametrize("name", PREDICTION_FILES)
def test_cli_reproduces_official_scores(name: str, official: dict, shared_data: Path, capsys):
    data_file, pred_file, expected = _case(official, shared_data, name)
    code, out, _ = _run_cli(capsys, data_file, pred_file)
    assert code == 0
    _assert_official(json.loads(out), expected)
    if name.startswith("v1.1"):
        assert out.count("\n") == 1  # one line, like evaluate-v1.1.py


def test_cli_warns_about_unanswered_questions(official: dict, shared_data: Path, capsys) -> None:
    data_file, pred_file, _ = _case(official, shared_data, "v1.1-logistic-regression.json")
    code, _, err = _run_cli(capsys, data_file, pred_file)
    assert code == 0
    assert "warning: 13 of 10570 questions have no prediction" in err


def test_cli_as_a_module_in_a_subprocess(official: dict, shared_data: Path) -> None:
    data_file, pred_file, expected = _case(official, shared_data, "v2.0-bert-single.json")
    proc = subprocess.run(
        [sys.executable, "-m", "qa_lightning.cli.score", str(data_file), str(pred_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    _assert_official(json.loads(proc.stdout), expected)


# --- normalization and per-answer scores ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Quick, Brown fox!", "quick brown fox"),
        ("  a  an\tthe \n", ""),
        ("another theory", "another theory"),  # articles only as whole words
        ("A-team", "ateam"),  # punctuation is deleted, not replaced by a space
        ("U.S.A.", "usa"),
        ("l'Amour", "lamour"),
        ("the.cat", "thecat"),  # punctuation goes before articles are looked for
        ("Café\u00a0 DÉJÀ vu", "café déjà vu"),  # Unicode lowercasing and whitespace
        ("«The» answer", "« » answer"),  # only ASCII punctuation is removed
        ("Tokyo，Japan", "tokyo，japan"),  # full-width comma kept
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_get_tokens() -> None:
    assert get_tokens("") == []
    assert get_tokens("The  Eiffel tower.") == ["eiffel", "tower"]


def test_v2_empty_answers_are_scored_by_agreement() -> None:
    assert (compute_exact("", ""), compute_f1("", "")) == (1, 1)
    assert (compute_exact("", "Paris"), compute_f1("", "Paris")) == (0, 0)
    assert (compute_exact("Paris", ""), compute_f1("Paris", "")) == (0, 0)
    assert compute_f1("the", "a") == 1  # both normalize to no tokens


def test_v1_f1_has_no_empty_case() -> None:
    assert f1_score("", "") == 0
    assert exact_match_score("", "") is True
    assert f1_score("a", "the") == 0
    assert exact_match_score("a", "the") is True


def test_f1_token_overlap() -> None:
    assert compute_f1("blue whale", "whale") == pytest.approx(2 / 3)
    assert f1_score("whale", "blue whale") == pytest.approx(2 / 3)
    assert compute_f1("a b c", "c b a") == 1.0
    assert compute_exact("a b c", "c b a") == 0
    assert compute_f1("cat cat", "cat") == pytest.approx(2 / 3)  # tokens are a multiset
    assert compute_f1("x y", "z") == 0
    p, r = 3 / 5, 3 / 7  # the official formula, bit for bit
    assert compute_f1("a1 a2 a3 a4 a5 a6 a7", "a1 a2 a3 b c") == (2 * p * r) / (p + r)


# --- dataset-level scores ---------------------------------------------------------------------

GOLD_V2 = {"q1": ["Paris", "paris!"], "q2": ["blue whale"], "q3": [], "q4": []}
PREDS_V2 = {"q1": "Paris", "q2": "whale", "q3": "", "q4": "something"}


def test_v2_scores_by_hand() -> None:
    result = score_predictions(GOLD_V2, PREDS_V2, version="2.0")
    expected = {
        "exact": 50.0,
        "f1": 100 * (1 + 2 / 3 + 1 + 0) / 4,
        "total": 4,
        "HasAns_exact": 50.0,
        "HasAns_f1": 100 * (1 + 2 / 3) / 2,
        "HasAns_total": 2,
        "NoAns_exact": 50.0,
        "NoAns_f1": 50.0,
        "NoAns_total": 2,
    }
    _assert_official(result, expected)


def test_v2_best_thresholds_by_hand() -> None:
    # Ascending: zz (not a question: skipped), q1 +1 -> 3, q2 +0 / +2/3, q4 -1, q3 +0.
    na_probs = {"q3": 0.9, "zz": -1.0, "q4": 0.3, "q2": 0.2, "q1": 0.1}
    result = score_predictions(GOLD_V2, PREDS_V2, version="2.0", na_probs=na_probs)
    assert result["exact"] == 50.0  # nothing exceeds the default threshold 1.0
    assert list(result)[-4:] == ["best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"]
    assert result["best_exact"] == 75.0
    assert result["best_exact_thresh"] == 0.1
    assert result["best_f1"] == pytest.approx(100 * (3 + 2 / 3) / 4)
    assert result["best_f1_thresh"] == 0.2


def test_v2_best_threshold_splits_ties_in_mapping_order() -> None:
    """Like the official script, a tie is walked one question at a time in mapping order."""
    q1_first = {"q1": 0.5, "q2": 0.5, "q3": 0.5, "q4": 0.5}
    q4_first = {"q4": 0.5, "q1": 0.5, "q2": 0.5, "q3": 0.5}
    first = score_predictions(GOLD_V2, PREDS_V2, version="2.0", na_probs=q1_first)
    second = score_predictions(GOLD_V2, PREDS_V2, version="2.0", na_probs=q4_first)
    assert (first["best_exact"], first["best_exact_thresh"]) == (75.0, 0.5)
    assert (second["best_exact"], second["best_exact_thresh"]) == (50.0, 0.0)


def test_v2_no_answer_threshold() -> None:
    na_probs = {"q1": 0.1, "q2": 0.2, "q4": 0.3, "q3": 0.9}
    result = score_predictions(
        GOLD_V2, PREDS_V2, version="2.0", na_probs=na_probs, na_prob_thresh=0.25
    )
    assert result["exact"] == 75.0  # q4 (0.3) now counts as "no answer": correct
    assert result["NoAns_exact"] == 100.0
    everything_null = score_predictions(GOLD_V2, PREDS_V2, version="2.0", na_prob_thresh=-1.0)
    assert (everything_null["HasAns_f1"], everything_null["NoAns_f1"]) == (0.0, 100.0)


def test_v2_gold_answers_that_normalize_to_nothing() -> None:
    gold = {"q1": ["The", "Paris"], "q2": ["a"]}  # q2 is answerable, yet its gold becomes ['']
    result = score_predictions(gold, {"q1": "", "q2": ""}, version="2.0")
    assert list(result) == ["exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total"]
    assert (result["exact"], result["f1"], result["HasAns_total"]) == (50.0, 50.0, 2)


def test_v2_missing_prediction_is_an_error() -> None:
    preds = {k: v for k, v in PREDS_V2.items() if k != "q2"}
    with pytest.raises(DataFormatError, match="no prediction for 1 of 4") as info:
        score_predictions(GOLD_V2, preds, version="2.0")
    assert (info.value.qid, info.value.field) == ("q2", "predictions")


def test_v2_missing_no_answer_probability_is_an_error() -> None:
    with pytest.raises(DataFormatError, match="no-answer probability") as info:
        score_predictions(GOLD_V2, PREDS_V2, version="2.0", na_probs={"q1": 0.5})
    assert (info.value.qid, info.value.field) == ("q2", "na_probs")


def test_v1_missing_predictions_score_zero() -> None:
    gold = {"q1": ["Paris"], "q2": ["Rome", "rome city"], "q3": ["Oslo"]}
    preds = {"q1": "paris", "q3": "the Oslo", "not-a-question": "x"}
    with pytest.warns(MissingPredictionWarning, match=r"1 of 3 .* \(first: 'q2'\)"):
        result = score_predictions(gold, preds, version="1.1")
    assert result == {"exact_match": 100 * 2 / 3, "f1": 100 * 2 / 3}


def test_v1_takes_the_best_gold_answer() -> None:
    result = score_predictions({"q": ["Rome", "rome city"]}, {"q": "city"}, version="1.1")
    assert result == {"exact_match": 0.0, "f1": pytest.approx(100 * 2 / 3)}


@pytest.mark.parametrize(
    ("gold", "kwargs", "error", "match"),
    [
        ({"q": ["x"]}, {"version": "3.0"}, ValueError, "version"),
        ({"q": ["x"]}, {"version": "1.1", "na_probs": {"q": 0.1}}, ValueError, "v2.0 only"),
        ({"q": []}, {"version": "1.1"}, DataFormatError, "needs a gold answer"),
        ({}, {"version": "2.0"}, DataFormatError, "no questions"),
    ],
)
def test_score_predictions_rejects_bad_arguments(gold, kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        score_predictions(gold, {"q": "x"}, **kwargs)


# --- reading data files -----------------------------------------------------------------------


def test_load_gold_v1_plain_and_gzipped(tmp_path: Path) -> None:
    data = _squad([_qa("b", "Paris", "paris"), _qa("a", "Rome")])
    plain = _write_json(tmp_path / "d.json", data)
    packed = tmp_path / "d.json.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    for path in (plain, packed):
        gold, version = load_gold(path)
        assert version == "1.1"
        assert list(gold.items()) == [("b", ["Paris", "paris"]), ("a", ["Rome"])]


@pytest.mark.parametrize(
    "data",
    [
        _squad([_qa("a", "x"), _qa("b", is_impossible=True)], version=None),
        _squad([_qa("a", "x")], version="v2.0"),
    ],
)
def test_load_gold_detects_v2(tmp_path: Path, data: dict) -> None:
    assert load_gold(_write_json(tmp_path / "d.json", data))[1] == "2.0"


QAS = "data[0].paragraphs[0].qas"
BAD_FILES = [  # content, qid, field, message
    pytest.param('{"data": [{"paragraphs": [', None, None, "not valid", id="truncated"),
    pytest.param([], None, "data", "list of articles", id="not-an-object"),
    pytest.param({"version": "1.1"}, None, "data", "list of articles", id="no-data"),
    pytest.param({"data": [{}]}, None, "data[0].paragraphs", "expected a list", id="no-paragraphs"),
    pytest.param({"data": [{"paragraphs": [{"qas": {}}]}]}, None, QAS, "a list", id="bad-qas"),
    pytest.param(_squad([_qa("a", "x"), {"answers": []}]), None, f"{QAS}[1].id", "id", id="no-id"),
    pytest.param(_squad([{"id": "a"}]), "a", "answers", "list of answers", id="no-answers"),
    pytest.param(
        _squad([{"id": "a", "answers": [{}]}]), "a", "answers[0].text", "text", id="no-text"
    ),
    pytest.param(_squad([_qa("a", "x"), _qa("a", "y")]), "a", "id", "duplicate", id="duplicate-id"),
    pytest.param(_squad([]), None, "data", "no questions", id="no-questions"),
    pytest.param(_squad([_qa("a", "x"), _qa("b")]), "b", "answers", "needs", id="v1-unanswered"),
]


@pytest.mark.parametrize(("content", "qid", "field", "message"), BAD_FILES)
def test_load_gold_rejects_bad_files(tmp_path: Path, content, qid, field, message) -> None:
    path = tmp_path / "bad.json"
    if isinstance(content, str):
        path.write_text(content)
    else:
        _write_json(path, content)
    with pytest.raises(DataFormatError, match=message) as info:
        load_gold(path)
    error = info.value
    assert (error.path, error.qid, error.field) == (str(path), qid, field)
    assert str(path) in str(error)
    for part in (qid, field):
        assert part is None or repr(part) in str(error)


def test_load_gold_rejects_truncated_gzip(tmp_path: Path) -> None:
    path = tmp_path / "d.json.gz"
    path.write_bytes(gzip.compress(json.dumps(_squad([_qa("a", "x")])).encode())[:-12])
    with pytest.raises(DataFormatError, match="not valid") as info:
        load_gold(path)
    assert info.value.path == str(path)


# --- the command line -------------------------------------------------------------------------


@pytest.fixture
def v2_files(tmp_path: Path) -> dict[str, Path]:
    qas = [_qa("q1", "Paris", "paris!"), _qa("q2", "blue whale")]
    qas += [_qa(qid, is_impossible=True) for qid in ("q3", "q4")]
    return {
        "data": _write_json(tmp_path / "dev.json", _squad(qas, version="v2.0")),
        "pred": _write_json(tmp_path / "pred.json", PREDS_V2),
        "na": _write_json(tmp_path / "na.json", {"q1": 0.1, "q2": 0.2, "q4": 0.3, "q3": 0.9}),
    }


def test_cli_v2_with_na_probs(v2_files: dict[str, Path], capsys) -> None:
    files = v2_files
    code, out, err = _run_cli(capsys, files["data"], files["pred"], "--na-prob-file", files["na"])
    assert (code, err) == (0, "")
    result = json.loads(out)
    assert result == score_predictions(
        GOLD_V2, PREDS_V2, version="2.0", na_probs=json.loads(files["na"].read_text())
    )
    assert (result["best_exact"], result["best_f1_thresh"]) == (75.0, 0.2)


def test_cli_na_prob_thresh(v2_files: dict[str, Path], capsys) -> None:
    argv = [v2_files["data"], v2_files["pred"], "--na-prob-file", v2_files["na"]]
    code, out, _ = _run_cli(capsys, *argv, "--na-prob-thresh", "0.25")
    assert code == 0
    assert json.loads(out)["exact"] == 75.0


def test_cli_out_file(v2_files: dict[str, Path], tmp_path: Path, capsys) -> None:
    out_file = tmp_path / "sub" / "eval.json"
    code, out, _ = _run_cli(capsys, v2_files["data"], v2_files["pred"], "--out-file", out_file)
    assert (code, out) == (0, "")
    assert json.loads(out_file.read_text()) == score_predictions(GOLD_V2, PREDS_V2, version="2.0")
    assert list(tmp_path.joinpath("sub").iterdir()) == [out_file]  # no temporary file left


@pytest.mark.parametrize(
    ("pred", "na", "expected"),
    [
        ("[1, 2]", None, "expected a JSON object mapping question id"),
        ('{"q1": "ok", "q2": 3, "q3": null}', None, "question id 'q2': expected an answer string"),
        ('{"q1": "Paris"', None, "not valid"),
        ('{"q1": "Paris"}', None, "question id 'q2', field 'predictions': no prediction"),
        (None, '{"q1": 0.1, "q2": "high"}', "question id 'q2': expected a number"),
        (None, '{"q1": 0.1}', "field 'na_probs': no no-answer probability"),
        (None, '{"q1": true}', "question id 'q1': expected a number"),
    ],
)
def test_cli_rejects_bad_prediction_files(v2_files, tmp_path, capsys, pred, na, expected) -> None:
    pred_file = v2_files["pred"] if pred is None else tmp_path / "bad-pred.json"
    na_file = v2_files["na"] if na is None else tmp_path / "bad-na.json"
    for path, text in ((pred_file, pred), (na_file, na)):
        if text is not None:
            path.write_text(text)
    code, out, err = _run_cli(capsys, v2_files["data"], pred_file, "--na-prob-file", na_file)
    assert (code, out) == (2, "")
    bad_file = pred_file if pred is not None else na_file
    assert err.startswith(f"qa-lightning-score: error: file {bad_file}")
    assert expected in err
    assert err.count("\n") == 1


def test_cli_missing_file(v2_files: dict[str, Path], tmp_path: Path, capsys) -> None:
    missing = tmp_path / "missing.json"
    code, _, err = _run_cli(capsys, missing, v2_files["pred"])
    assert code == 2
    assert err == f"qa-lightning-score: error: cannot read {missing}: No such file or directory\n"


def test_cli_bad_data_file(v2_files: dict[str, Path], tmp_path: Path, capsys) -> None:
    data = _write_json(tmp_path / "dup.json", _squad([_qa("a", "x"), _qa("a", "y")]))
    code, _, err = _run_cli(capsys, data, v2_files["pred"])
    assert code == 2
    assert f"file {data}, question id 'a', field 'id': duplicate" in err


def test_cli_no_answer_options_need_v2(v2_files: dict[str, Path], tmp_path: Path, capsys):
    data = _write_json(tmp_path / "v1.json", _squad([_qa("q1", "Paris")]))
    code, _, err = _run_cli(capsys, data, v2_files["pred"], "--na-prob-file", v2_files["na"])
    assert code == 2
    assert "apply to v2.0 only" in err


def test_cli_v1_missing_predictions_warn(tmp_path: Path, capsys) -> None:
    data = _write_json(tmp_path / "v1.json", _squad([_qa("q1", "Paris"), _qa("q2", "Rome")]))
    pred = _write_json(tmp_path / "pred.json", {"q1": "Paris"})
    code, out, err = _run_cli(capsys, data, pred)
    assert code == 0
    assert json.loads(out) == {"exact_match": 50.0, "f1": 50.0}
    assert err == (
        "qa-lightning-score: warning: 1 of 2 questions have no prediction and score 0 "
        "(first: 'q2')\n"
    )


@pytest.mark.parametrize("argv", [[], ["only-one-file.json"], ["a", "b", "--na-prob-thresh", "x"]])
def test_cli_usage_errors(argv: list[str], capsys) -> None:
    code, _, err = _run_cli(capsys, *argv)
    assert code == 2
    assert "usage: qa-lightning-score" in err
