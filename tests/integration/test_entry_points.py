"""The console entry point finds its configs from any working directory (a subprocess)."""

from __future__ import annotations


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
