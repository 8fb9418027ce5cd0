"""``qa-lightning-serve PATH [--host 127.0.0.1 --port 8000]``: serve a trained model over HTTP."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from qa_lightning.serving.requests import Limits

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qa-lightning-serve",
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
    parser.add_argument("--log-level", default="info")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``qa-lightning-serve``."""
    import uvicorn

    from qa_lightning.hub import set_models_dir
    from qa_lightning.inference import QuestionAnswerer
    from qa_lightning.serving.app import create_app

    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "listening on %s: reachable beyond this machine, with no authentication", args.host
        )
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    set_models_dir(args.models_dir or None)
    qa = QuestionAnswerer.from_pretrained(args.path, device=args.device)
    limits = Limits(
        max_context_chars=args.max_context_chars,
        max_question_chars=args.max_question_chars,
        max_items=args.max_items,
    )
    app = create_app(
        qa,
        model_name=str(args.path),
        limits=limits,
        max_batch_size=1 if args.no_batching else args.max_batch_size,
        max_wait_ms=0.0 if args.no_batching else args.max_wait_ms,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
