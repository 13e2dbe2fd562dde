"""``rlmec grm serve|convert-smollm2|build-tiny``. Heavy imports stay inside the commands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rlmec.services.grm.model_files import SMOLLM2_DIR

# The settings `rlmec grm serve` takes as flags (generated from GrmSettings: the flag is the
# field's name); a flag overrides its RLMEC_GRM_* variable.
SERVE_FIELDS = (
    "model", "model_name", "engine", "dtype", "device", "max_model_len", "kv_cache_gib",
    "max_batch_tokens", "max_batch_size", "max_request_tokens", "max_concurrent_requests",
    "max_queued_requests", "request_timeout_s", "fair_tenants", "speculative_tokens", "upstreams",
    "upstream_model", "host", "port",
)  # fmt: skip


def add_subcommands(sub: Any) -> None:
    """``serve``, ``convert-smollm2``, ``build-tiny`` under ``rlmec grm`` (see rlmec.cli)."""
    from rlmec.services.grm.settings import GrmSettings
    from rlmec.shared.settings_cli import add_setting_flags, deprecated_alias

    serve = sub.add_parser("serve", help="run the GRM HTTP service",
                           description="Run the GRM HTTP service: locate, rewrite, score "
                           "(flags override the RLMEC_GRM_* variables).")  # fmt: skip
    add_setting_flags(serve, GrmSettings, SERVE_FIELDS, env_prefix="RLMEC_GRM_")
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

    text = "write SmolLM2-135M-Instruct as a plain HF dir (cached)"
    convert = sub.add_parser("convert-smollm2", help=text, description=text + ".")
    convert.add_argument("--output", type=Path, default=SMOLLM2_DIR, help="output dir")
    deprecated_alias(convert, "--out", "--output", type=Path)
    convert.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"],
                         help="weights' dtype")  # fmt: skip
    convert.set_defaults(func=_convert)

    text = "write a tiny random Llama for tests"
    tiny = sub.add_parser("build-tiny", help=text, description=text + ".")
    tiny.add_argument("--output", type=Path, required=True, help="output dir")
    deprecated_alias(tiny, "--out", "--output", type=Path)
    tiny.add_argument("--seed", type=int, default=0, help="weights' seed")
    tiny.set_defaults(func=_build_tiny)


def _serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from rlmec.services.grm.app import create_app
    from rlmec.services.grm.settings import get_settings
    from rlmec.services.http_server import serve

    overrides = {field: getattr(args, field) for field in SERVE_FIELDS}
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

    print(convert_smollm2(args.output.expanduser(), dtype=args.dtype))
    return 0


def _build_tiny(args: argparse.Namespace) -> int:
    from rlmec.services.grm.model_files import build_tiny_model

    print(build_tiny_model(args.output.expanduser(), seed=args.seed))
    return 0
