"""``rlmec up`` / ``rlmec down``: the platform's services on loopback, left running for your own
calls, then stopped.

``rlmec up`` starts what ``rlmec demo`` starts before its loop (Redis with AOF, the GRM service,
the reward service with one team, a reward worker), each in its own process group, on the
stable ports 8001 (GRM) and 8002 (reward; a free port where one is taken), saying every 15 s
how the GRM's loading goes, writes
``<workdir>/state.json`` (URLs, the team's key, PIDs; mode 0600) and returns, printing the URLs,
the key and where the logs are, and the ``export RLMEC_URL=... RLMEC_GRM_URL=...
RLMEC_API_KEY=...`` line the SDK and the adapters read (``rlmec up --env`` prints it again).
``rlmec down`` stops every group it recorded (SIGTERM, then SIGKILL after a grace period) and
waits until each is gone. ``--allow-anonymous`` serves key-less requests (loopback only).
Redis keeps its data in ``<workdir>/redis`` and the team keeps its key (``<workdir>/api-key``,
``--rotate-key`` for a new one) between the two.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from pathlib import Path
from typing import Any

DEFAULT_WORKDIR = Path.home() / ".cache" / "rlmec" / "up"
# The ports docker-compose.yml uses, so a URL written once keeps working across `up`s.
GRM_PORT, REWARD_PORT = 8001, 8002
STATE_FILE = "state.json"
KEY_FILE = "api-key"


def add_commands(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Start Redis, the GRM service, the reward service (one team) and a reward worker on "
        "loopback and leave them running; `rlmec down` stops them."
    )
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                        help="logs, Redis data and state.json")  # fmt: skip
    parser.add_argument("--model", type=Path, default=None,
                        help="policy model dir (its tokenizer is registered as 'smollm2'); "
                        "default: SmolLM2-135M converted once")  # fmt: skip
    parser.add_argument("--grm", type=Path, default=None,
                        help="GRM model dir (default: the trained GRM when present, else "
                        "--model)")  # fmt: skip
    parser.add_argument("--task", choices=["arith", "gsm8k"], default="arith",
                        help="whose trained GRM to serve when present: the arith GRM or the "
                        "synthetic GSM8K one (as `rlmec demo --task`)")  # fmt: skip
    parser.add_argument("--engine", choices=["vllm", "hf"], default="vllm",
                        help="the GRM's inference engine")  # fmt: skip
    parser.add_argument("--grm-port", type=int, default=GRM_PORT,
                        help="the GRM service's port (a free one when it is taken)")  # fmt: skip
    parser.add_argument("--port", type=int, default=REWARD_PORT,
                        help="the reward service's port (a free one when it is taken)")  # fmt: skip
    parser.add_argument("--allow-anonymous", action="store_true",
                        help="serve key-less requests as team 'anonymous' (OpenRLHF's key-less "
                        "path; the services listen on 127.0.0.1 only)")  # fmt: skip
    parser.add_argument("--startup-timeout", type=float, default=420.0,
                        help="seconds each service may take to be ready")  # fmt: skip
    parser.add_argument(
        "--env", action="store_true", help="print the running stack's export line, start nothing"
    )
    parser.add_argument(
        "--rotate-key", action="store_true", help="a new team key (default: the last up's)"
    )
    parser.set_defaults(func=up)


def add_down_commands(parser: argparse.ArgumentParser) -> None:
    parser.description = "Stop every process `rlmec up` started."
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                        help="the workdir `rlmec up` used")  # fmt: skip
    parser.add_argument("--grace-s", type=float, default=20.0,
                        help="seconds between SIGTERM and SIGKILL")  # fmt: skip
    parser.set_defaults(func=down)


def env_line(state: dict[str, Any]) -> str:
    """The shell line that points the SDK, the adapters and the CLI at the stack."""
    urls = state["urls"]
    return (f"export RLMEC_URL={urls['reward']} RLMEC_GRM_URL={urls['grm']} "
            f"RLMEC_API_KEY={state['api_key']}")  # fmt: skip


def team_key(workdir: Path, rotate: bool) -> str:
    """The team's key: the one the last ``up`` made (so clients keep working across ``up``s),
    or a new one when there is none or ``rotate``."""
    from rlmec.shared.secret_files import write_secret_file

    path = workdir / KEY_FILE
    if path.is_file() and not rotate:
        return path.read_text().strip()
    key = "rlmec-" + secrets.token_hex(16)
    write_secret_file(path, key + "\n")
    return key


def up(args: argparse.Namespace) -> int:
    from rlmec.loop.services import DEMO_TEAM, resolve_models, say, start_services
    from rlmec.loop.stack import Stack, group_alive, process_env
    from rlmec.shared.secret_files import write_secret_file

    state_path = args.workdir / STATE_FILE
    if args.env:
        if not state_path.is_file():
            print(f"rlmec up: nothing is up ({state_path} does not exist); run `rlmec up`",
                  file=sys.stderr)  # fmt: skip
            return 2
        print(env_line(json.loads(state_path.read_text())))
        return 0
    if state_path.is_file():
        pids = json.loads(state_path.read_text())["pids"]
        if any(group_alive(pid) for pid in pids.values()):
            print(f"rlmec up: already up ({state_path}); run `rlmec down` first", file=sys.stderr)
            return 2
    args.workdir.mkdir(parents=True, exist_ok=True)
    model, grm = resolve_models(args, make_start=False)
    key = team_key(args.workdir, args.rotate_key)
    ports = _ports(args)
    stack = Stack(args.workdir / "logs")
    try:
        urls = start_services(stack, args, model, grm, {**process_env(), "RLMEC_API_KEY": key},
                              fresh_redis=False, ports=ports,
                              anonymous=args.allow_anonymous)  # fmt: skip
    except BaseException:
        stack.close()
        raise
    pids = stack.detach()
    state = {"urls": urls, "team": DEMO_TEAM, "api_key": key, "pids": pids,
             "logs": str(stack.log_dir)}  # fmt: skip
    write_secret_file(state_path, json.dumps(state, indent=1))  # it holds the key
    say(f"up: reward service {urls['reward']} (docs {urls['reward']}/docs), GRM service "
        f"{urls['grm']}, Redis {urls['redis']}")  # fmt: skip
    if args.allow_anonymous:
        say("key-less requests are served as team 'anonymous' (--allow-anonymous)")
    say(f"team {DEMO_TEAM!r}; point clients at it (`rlmec up --env` prints this again):")
    print(env_line(state))
    say(f"logs in {stack.log_dir}; state in {state_path}; stop everything with `rlmec down`")
    return 0


def _ports(args: argparse.Namespace) -> tuple[int, int]:
    """(GRM, reward) ports: the asked ones, or free ones where they are taken (said)."""
    from rlmec.loop.services import say
    from rlmec.loop.stack import port_or_free

    out = []
    for flag, wanted in (("--grm-port", args.grm_port), ("--port", args.port)):
        port, ok = port_or_free(wanted)
        if not ok:
            say(f"port {wanted} ({flag}) is taken: using {port}")
        out.append(port)
    return out[0], out[1]


def down(args: argparse.Namespace) -> int:
    from rlmec.loop.stack import stop_detached

    state_path = args.workdir / STATE_FILE
    if not state_path.is_file():
        print(f"rlmec down: nothing is up ({state_path} does not exist)", file=sys.stderr)
        return 0
    pids = json.loads(state_path.read_text())["pids"]
    stopped, alive = stop_detached(pids, grace_s=args.grace_s)
    if alive:  # state.json stays: a later `down` tries again
        left = ", ".join(f"{n} (process group {pids[n]})" for n in alive)
        print(f"rlmec down: still running after SIGKILL: {left}", file=sys.stderr)
        return 1
    state_path.unlink()
    print(f"rlmec down: stopped {', '.join(stopped) or 'nothing (all had exited)'}")
    return 0
