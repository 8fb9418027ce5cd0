"""``qa-lightning-serve PATH [--host 127.0.0.1 --port 8000]``: serve a trained model over HTTP.

API keys come from ``--api-key-file`` or ``QA_LIGHTNING_API_KEY``, never from the command line;
a non-loopback ``--host`` without a key is refused unless ``--insecure``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qa_lightning.errors import QALightningError
from qa_lightning.serving.auth import API_KEY_ENV, check_bind, is_loopback, load_api_keys
from qa_lightning.serving.requests import Limits

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qa-lightning-serve",
        allow_abbrev=False,  # "--api-key SECRET" must not pass as --api-key-file
        description="Serve a trained QA model over HTTP: POST /answer, GET /health, a web page at /.",
    )
    parser.add_argument("path", help="hf_model/ directory, Lightning .ckpt, or hub model name")
    parser.add_argument("--host", default="127.0.0.1", help="default: loopback only")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", default="cpu", help="e.g. cpu, cuda, cuda:1")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op CPU threads (default: torch's)"
    )
    parser.add_argument("--max-batch-size", type=int, default=32, help="items per model call")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch fills")
    parser.add_argument(
        "--no-batching", action="store_true", help="one item per model call (max batch size 1)"
    )
    defaults = Limits()
    parser.add_argument("--max-context-chars", type=int, default=defaults.max_context_chars)
    parser.add_argument("--max-question-chars", type=int, default=defaults.max_question_chars)
    parser.add_argument("--max-items", type=int, default=defaults.max_items, help="per request")
    parser.add_argument(
        "--models-dir",
        help="local folder of hub model folders (default: $QA_LIGHTNING_MODELS_DIR)",
    )
    parser.add_argument(
        "--api-key-file",
        default=None,
        help=f"file of API keys, one per line (else the {API_KEY_ENV} environment variable)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback --host without an API key",
    )
    parser.add_argument(
        "--max-queue", type=int, default=256, help="items waiting at most; beyond, 503"
    )
    parser.add_argument(
        "--timeout-s", type=float, default=30.0, help="deadline of a request; past it, 504"
    )
    parser.add_argument(
        "--latency-target-ms",
        type=_positive_ms,
        default=None,
        help="refuse (503) a request predicted to be answered later than this, and cap batches "
        "to it (default: off, only --max-queue bounds admission)",
    )
    parser.add_argument(
        "--grace-s", type=float, default=30.0, help="on SIGTERM/SIGINT, time to finish in flight"
    )
    parser.add_argument("--log-level", default="info")
    return parser


def _positive_ms(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of milliseconds: {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive number of milliseconds, got {text}")
    return value


def public_model_name(path: str | Path, config: Any) -> str:
    """The model's name for clients: its hub name, never a filesystem path.

    A hub name is shown as given; for a local model, the config's ``_name_or_path`` when it is
    a hub name (not a path), else the architecture or model type.
    """
    if not Path(path).exists():
        return str(path)
    if config is None and Path(path).is_dir() and (Path(path) / "config.json").is_file():
        config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    if config is not None and not isinstance(config, dict):
        config = config.to_dict()
    config = config or {}
    name = str(config.get("_name_or_path") or "")
    looks_local = name.startswith((".", "/", "~")) or name.count("/") > 1 or ":" in name
    if name and not looks_local and not Path(name).exists():
        return name
    architectures = config.get("architectures") or []
    return str(architectures[0] if architectures else config.get("model_type") or "model")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``qa-lightning-serve``."""
    import uvicorn

    from qa_lightning.hub import set_models_dir
    from qa_lightning.inference import QuestionAnswerer
    from qa_lightning.serving.app import create_app
    from qa_lightning.serving.server import DrainingServer

    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        keys = load_api_keys(args.api_key_file)
        check_bind(args.host, keys, args.insecure)
    except QALightningError as err:
        sys.exit(f"qa-lightning-serve: {err}")
    if not keys:
        warn = log.info if is_loopback(args.host) else log.warning
        warn("no API key: /answer and /metrics are open to anyone who can reach %s", args.host)
    else:
        log.info("%d API key(s) loaded; /answer and /metrics need one", len(keys))
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    set_models_dir(args.models_dir or None)
    began = time.perf_counter()
    qa = QuestionAnswerer.from_pretrained(args.path, device=args.device)
    load_s = time.perf_counter() - began
    limits = Limits(
        max_context_chars=args.max_context_chars,
        max_question_chars=args.max_question_chars,
        max_items=args.max_items,
    )
    backbone = getattr(qa.module, "model", None)
    app = create_app(
        qa,
        model_name=public_model_name(args.path, getattr(backbone, "config", None)),
        limits=limits,
        max_batch_size=1 if args.no_batching else args.max_batch_size,
        max_wait_ms=0.0 if args.no_batching else args.max_wait_ms,
        api_keys=keys,
        max_queue=args.max_queue,
        timeout_s=args.timeout_s,
        model_load_s=load_s,
        latency_target_ms=args.latency_target_ms,
    )
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=5,
    )
    DrainingServer(config, app.state.server, grace_s=args.grace_s).run()


if __name__ == "__main__":
    main()
