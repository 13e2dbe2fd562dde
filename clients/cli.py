"""``rlmec client ...``: score a JSONL file, push rollouts, follow a batch, list GRM models.

Only the SDK, httpx and tqdm are imported, so these commands work in a torch-free install.
Exit codes: 0 done, 1 the service refused or could not be reached, 2 bad arguments or input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rlmec.clients._base import DEFAULT_MAX_RETRIES, DEFAULT_MAX_RETRY_WAIT
from rlmec.clients._jsonl import InputFileError, count_lines, read_samples
from rlmec.clients.errors import RlmecClientError
from rlmec.clients.sync import Client, GrmClient
from rlmec.shared.schemas import MAX_BATCH, RewardParams, Sample
from rlmec.shared.settings_cli import add_setting_flags, deprecated_alias, model_from_flags

URL_ENV = "RLMEC_URL"
GRM_URL_ENV = "RLMEC_GRM_URL"
ADMIN_TOKEN_ENV = "RLMEC_GRM_ADMIN_TOKEN_FILE"
TERMINAL_STATUSES = frozenset({"scored", "dead_lettered"})


def _batch_size(value: str) -> int:
    try:
        size = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--batch-size {value!r} is not a whole number") from None
    if not 1 <= size <= MAX_BATCH:
        raise argparse.ArgumentTypeError(
            f"--batch-size {size} is out of range; use 1..{MAX_BATCH} (the service's limit)"
        )
    return size


def _add_connection(p: argparse.ArgumentParser, *, url_env: str = URL_ENV) -> None:
    p.add_argument(
        "--url",
        default=os.environ.get(url_env),
        help=f"service base URL, e.g. http://localhost:8002 (default: ${url_env})",
    )
    p.add_argument(
        "--api-key-file",
        type=Path,
        default=None,
        help="file holding the team's API key, sent as 'Authorization: Bearer KEY' "
        "(default: $RLMEC_API_KEY)",
    )
    # A key on the command line shows in `ps` and the shell's history: a file or the env.
    deprecated_alias(p, "--api-key", "--api-key-file", dest="api_key")
    p.add_argument(
        "--timeout", type=float, default=120.0, help="seconds per request (default: 120)"
    )
    p.add_argument(
        "--max-retries",
        type=int,
        default=DEFAULT_MAX_RETRIES,
        help="retries on 429/503 with backoff, honouring Retry-After "
        f"(default: {DEFAULT_MAX_RETRIES})",
    )
    p.add_argument(
        "--max-retry-wait",
        type=float,
        default=DEFAULT_MAX_RETRY_WAIT,
        help="seconds of waiting between retries in all, per call "
        f"(default: {DEFAULT_MAX_RETRY_WAIT:g})",
    )


def _add_scoring(p: argparse.ArgumentParser, default_batch: int) -> None:
    p.add_argument(
        "--input", required=True, type=Path, help="JSONL, one Sample per line (see README)"
    )
    p.add_argument(
        "--batch-size",
        type=_batch_size,
        default=default_batch,
        help=f"samples per request (default: {default_batch}, max {MAX_BATCH})",
    )
    p.add_argument(
        "--policy-tokenizer", default=None, help="registered policy tokenizer to project onto"
    )
    add_setting_flags(p, RewardParams, RewardParams.model_fields)  # §3.1 shaping
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_commands(parser: argparse.ArgumentParser) -> None:
    """Register ``score``, ``push``, ``status``, ``result``, ``grm-models``,
    ``grm-adapter-load``/``-unload``, ``show`` and ``health`` under the ``client`` parser of
    ``rlmec.cli``."""
    sub = parser.add_subparsers(dest="client_command", metavar="COMMAND", required=True)

    score = sub.add_parser(
        "score",
        help="score a JSONL file of samples into a JSONL file of results",
        description="POST batches of samples to /v1/token-rewards and write one ScoredSample "
        "JSON per line, in input order. Input lines are all validated before anything is sent.",
    )
    _add_connection(score)
    _add_scoring(score, default_batch=32)
    score.add_argument("--output", required=True, type=Path, help="JSONL of results")
    score.add_argument(
        "--resume",
        action="store_true",
        help="append to --output, skipping as many input samples as it already holds",
    )
    score.set_defaults(func=_run_score)

    push = sub.add_parser(
        "push",
        help="push samples to the rollout queue (asynchronous scoring)",
        description="POST batches of samples to /v1/rollouts; prints one JSON line per "
        "accepted batch (batch_id, status). A full queue is retried, then reported.",
    )
    _add_connection(push)
    _add_scoring(push, default_batch=256)
    push.add_argument(
        "--batch-id-prefix",
        default=None,
        help="name batches PREFIX-00000, PREFIX-00001, ... (default: the service names them)",
    )
    push.add_argument("--skip", type=int, default=0, help="skip the first N samples (resume)")
    push.set_defaults(func=_run_push)

    status = sub.add_parser(
        "status",
        help="status of a pushed batch",
        description="GET /v1/rollouts/BATCH_ID: queued, scoring, scored or dead_lettered.",
    )
    _add_connection(status)
    status.add_argument("batch_id", metavar="BATCH_ID")
    status.add_argument("--wait", action="store_true", help="poll until scored/dead_lettered")
    status.add_argument("--poll-interval", type=float, default=2.0, help="seconds (default: 2)")
    status.add_argument(
        "--wait-timeout", type=float, default=600.0, help="give up after (default: 600 s)"
    )
    status.set_defaults(func=_run_status)

    result = sub.add_parser(
        "result",
        help="results of a scored batch, one JSON line per sample",
        description="GET /v1/rollouts/BATCH_ID/result: every sample's result in push order "
        "(404 until the batch is scored; `status --wait` first).",
    )
    _add_connection(result)
    result.add_argument("batch_id", metavar="BATCH_ID")
    result.set_defaults(func=_run_result)

    models = sub.add_parser(
        "grm-models", help="list the GRM service's models", description="GET /v1/models."
    )
    _add_connection(models, url_env=GRM_URL_ENV)
    models.set_defaults(func=_run_grm_models)

    routes = {"load": "POST /admin/adapters", "unload": "DELETE /admin/adapters/NAME"}
    for verb, summary in (("load", "load a LoRA adapter into"), ("unload", "unload one from")):
        adapter = sub.add_parser(
            f"grm-adapter-{verb}",
            help=f"{summary} a running GRM service (admin token)",
            description=f"{routes[verb]}: needs RLMEC_GRM_ADMIN_TOKEN_FILE on the service and "
            "its token here.",
        )
        _add_connection(adapter, url_env=GRM_URL_ENV)
        adapter.add_argument("--name", required=True, help="the model id it is served as")
        if verb == "load":
            adapter.add_argument(
                "--path", required=True, help="the adapter directory, on the GRM's machine"
            )
        adapter.add_argument(
            "--admin-token-file",
            type=Path,
            default=os.environ.get(ADMIN_TOKEN_ENV),
            help=f"file holding the service's admin token (default: ${ADMIN_TOKEN_ENV})",
        )
        adapter.set_defaults(func=_run_grm_adapter)

    show = sub.add_parser(
        "show",
        help="scored results in the terminal: penalised tokens, the rewrite's diff, reasons",
        description="Reads the JSONL of `rlmec client score`, `client result` or `data "
        "signals` (no service needed). Each prediction's tokens are coloured by reward (red: "
        "the GRM would not keep them), the GRM's rewrite is a word diff with the located step "
        "marked (>), an unscored sample shows its reason.",
    )
    show.add_argument("--input", required=True, type=Path, help="JSONL of results")
    show.add_argument("--only", default="wrong,correct,unscored",
                      help="comma-separated kinds to show: wrong, correct, unscored")  # fmt: skip
    show.add_argument("--reason", default=None, help="only unscored results with this reason")
    show.add_argument("--id", action="append", default=[], help="only this sample id (repeat)")
    show.add_argument("--limit", type=int, default=20, help="results shown at most (0: all)")
    show.add_argument("--policy", action="store_true",
                      help="colour the policy tokenizer's projection, not the GRM's")  # fmt: skip
    show.set_defaults(func=_run_show)

    health = sub.add_parser("health", help="GET /health of a service")
    _add_connection(health)
    health.set_defaults(func=_run_health)


def _fail(message: str, code: int) -> int:
    print(f"rlmec client: error: {message}", file=sys.stderr)
    return code


def _guarded(
    run: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """Turn the SDK's and the input reader's exceptions into a message and an exit code."""

    def wrapper(args: argparse.Namespace) -> int:
        if not args.url:
            env = GRM_URL_ENV if args.client_command.startswith("grm-") else URL_ENV
            return _fail(f"no service URL: pass --url http://HOST:PORT or set ${env}", 2)
        try:
            return run(args)
        except (InputFileError, ValueError) as exc:
            return _fail(str(exc), 2)
        except RlmecClientError as exc:
            return _fail(str(exc), 1)

    return wrapper


def _api_key(args: argparse.Namespace) -> str | None:
    """The key: the deprecated --api-key's (or the admin token), else --api-key-file's, else
    None (the client then reads $RLMEC_API_KEY)."""
    if key := getattr(args, "api_key", None):
        return str(key)
    if args.api_key_file is None:
        return None
    from rlmec.shared.secret_files import read_secret_file

    return read_secret_file(args.api_key_file, "--api-key-file")


def _client(args: argparse.Namespace, cls: type[Client] | type[GrmClient] = Client) -> Any:
    return cls(
        args.url,
        api_key=_api_key(args),
        timeout=args.timeout,
        max_retries=args.max_retries,
        max_retry_wait=args.max_retry_wait,
    )


def _params(args: argparse.Namespace) -> RewardParams:
    return model_from_flags(RewardParams, args)


def _progress(total: int, initial: int, quiet: bool, unit: str) -> Any:
    return tqdm(total=total, initial=initial, unit=unit, disable=quiet, file=sys.stderr)


@_guarded
def _run_score(args: argparse.Namespace) -> int:
    samples = read_samples(args.input)
    params = _params(args)
    done = count_lines(args.output) if args.resume else 0
    if done > len(samples):
        return _fail(
            f"{args.output} already holds {done} results but {args.input} has only "
            f"{len(samples)} samples; pick another --output or drop --resume",
            2,
        )
    mode = "a" if args.resume else "w"
    with (
        _client(args) as client,
        args.output.open(mode, encoding="utf-8") as out,
        _progress(len(samples), done, args.quiet, "sample") as bar,
    ):
        for start in range(done, len(samples), args.batch_size):
            batch = samples[start : start + args.batch_size]
            try:
                response = client.token_rewards(
                    batch, params=params, policy_tokenizer=args.policy_tokenizer
                )
            except RlmecClientError as exc:
                exc.args = (f"{exc} ({start} results in {args.output}; rerun with --resume)",)
                raise
            # One write per batch, flushed: a crash loses at most the batch in flight,
            # and --resume picks up exactly after the last complete one.
            out.write("".join(r.model_dump_json() + "\n" for r in response.results))
            out.flush()
            bar.update(len(batch))
    return 0


@_guarded
def _run_push(args: argparse.Namespace) -> int:
    samples: list[Sample] = read_samples(args.input)
    if not 0 <= args.skip <= len(samples):
        return _fail(f"--skip {args.skip} is out of range; use 0..{len(samples)}", 2)
    params = _params(args)
    with _client(args) as client, _progress(len(samples), args.skip, args.quiet, "sample") as bar:
        for start in range(args.skip, len(samples), args.batch_size):
            batch = samples[start : start + args.batch_size]
            batch_id = None
            if args.batch_id_prefix:
                batch_id = f"{args.batch_id_prefix}-{start // args.batch_size:05d}"
            try:
                accepted = client.push_rollouts(
                    batch, batch_id=batch_id, params=params, policy_tokenizer=args.policy_tokenizer
                )
            except RlmecClientError as exc:
                exc.args = (f"{exc} ({start} samples pushed; rerun with --skip {start})",)
                raise
            print(accepted.model_dump_json(), flush=True)
            bar.update(len(batch))
    return 0


@_guarded
def _run_status(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.wait_timeout
    with _client(args) as client:
        while True:
            batch = client.rollout_status(args.batch_id)
            if not args.wait or batch.status in TERMINAL_STATUSES:
                break
            if time.monotonic() + args.poll_interval > deadline:
                print(batch.model_dump_json())
                return _fail(
                    f"batch {args.batch_id} still {batch.status} after {args.wait_timeout} s; "
                    "raise --wait-timeout or check the workers",
                    1,
                )
            time.sleep(args.poll_interval)
    print(batch.model_dump_json())
    return 1 if batch.status == "dead_lettered" else 0


@_guarded
def _run_result(args: argparse.Namespace) -> int:
    with _client(args) as client:
        batch = client.rollout_result(args.batch_id)
    for result in batch.results:
        print(result.model_dump_json(exclude_none=True))
    return 0


@_guarded
def _run_grm_models(args: argparse.Namespace) -> int:
    with _client(args, GrmClient) as client:
        models = client.models()
    print(json.dumps(models.model_dump(mode="json"), indent=2))
    return 0


@_guarded
def _run_grm_adapter(args: argparse.Namespace) -> int:
    if args.admin_token_file is None:
        return _fail(f"no admin token: pass --admin-token-file FILE or set ${ADMIN_TOKEN_ENV}", 2)
    try:
        args.api_key = Path(args.admin_token_file).read_text().strip()
    except OSError as exc:
        return _fail(f"--admin-token-file {args.admin_token_file}: {exc.strerror}", 2)
    with _client(args, GrmClient) as client:
        if args.client_command == "grm-adapter-load":
            done = client.load_adapter(args.name, args.path)
        else:
            done = client.unload_adapter(args.name)
    print(done.model_dump_json(exclude_none=True))
    return 0


def _run_show(args: argparse.Namespace) -> int:
    from rich.console import Console

    from rlmec.clients._jsonl import read_models
    from rlmec.clients.show import KINDS, select, show
    from rlmec.shared.schemas import ScoredSample

    only = [k.strip() for k in args.only.split(",") if k.strip()]
    if not only or any(k not in KINDS for k in only):
        return _fail(f"--only {args.only!r}: choose among {', '.join(KINDS)}", 2)
    if args.limit < 0:
        return _fail(f"--limit {args.limit}: must be 0 (all) or more", 2)
    try:
        results = read_models(args.input, ScoredSample, "a ScoredSample (status, prediction, ...)")
    except InputFileError as exc:
        return _fail(str(exc), 2)
    shown = select(results, only=only, reason=args.reason, ids=args.id)
    show(Console(), results, shown[: args.limit or None], policy=args.policy)
    return 0


@_guarded
def _run_health(args: argparse.Namespace) -> int:
    with _client(args) as client:
        print(json.dumps(client.health()))
    return 0
