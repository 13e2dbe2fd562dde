"""Plugging the RLMEC reward service into OpenRLHF, two ways.

1. **Remote reward URL** (no code on the OpenRLHF side)::

       --reward.remote_url http://reward:8002/get_reward --data.label_key answer

   (``--remote_rm_url`` in older versions). OpenRLHF's HTTP client sends no custom headers,
   so it cannot send an API key: the reward service must allow key-less access, which an
   operator enables by explicit setting, on a private network only (docs/interop.md).

2. **Reward-function file** (authenticated): OpenRLHF also accepts a Python file as the
   remote URL and calls its ``reward_func(queries, prompts, labels)``. This module is such a
   file; it posts to ``/get_reward`` through the SDK with ``$RLMEC_API_KEY``::

       export RLMEC_URL=http://reward:8002 RLMEC_API_KEY=team-key
       --reward.remote_url "$(python -m rlmec.clients.adapters.openrlhf --print-file)"

``python -m rlmec.clients.adapters.openrlhf --url URL`` prints the flags for either way.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlmec.clients._base import _check_base_url
from rlmec.clients.sync import Client

URL_ENV = "RLMEC_URL"


def remote_url(base_url: str) -> str:
    """The ``/get_reward`` URL OpenRLHF posts to."""
    return f"{_check_base_url(base_url)}/get_reward"


def openrlhf_flags(
    base_url: str | None = None,
    *,
    label_key: str | None = "answer",
    legacy: bool = False,
    use_file: bool = False,
) -> list[str]:
    """Command-line flags for OpenRLHF's trainer.

    ``use_file=True`` points OpenRLHF at this module's ``reward_func`` (sends the API key);
    otherwise at ``base_url``'s ``/get_reward`` (key-less). ``legacy`` uses the pre-rename
    flags ``--remote_rm_url`` / ``--label_key``.
    """
    if use_file:
        target = reward_file()
    elif base_url is None:
        raise ValueError("base_url is required unless use_file=True; e.g. http://reward:8002")
    else:
        target = remote_url(base_url)
    flags = ["--remote_rm_url" if legacy else "--reward.remote_url", target]
    if label_key:
        flags += ["--label_key" if legacy else "--data.label_key", label_key]
    return flags


def reward_file() -> str:
    """Path of this file, for ``--reward.remote_url`` (OpenRLHF loads ``reward_func`` from it)."""
    return str(Path(__file__).resolve())


def reward_func(
    queries: Sequence[str],
    prompts: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """OpenRLHF's reward-function hook: the service's ``/get_reward`` answer with lists turned
    into ``torch.Tensor`` (OpenRLHF's environment always has torch; the SDK does not import it
    unless this hook runs). Configured by ``$RLMEC_URL`` and ``$RLMEC_API_KEY``."""
    url = os.environ.get(URL_ENV)
    if not url:
        raise ValueError(f"${URL_ENV} is not set; export {URL_ENV}=http://HOST:PORT")
    timeout = float(os.environ.get("RLMEC_TIMEOUT", "180"))
    with Client(url, timeout=timeout) as client:
        answer = client.get_reward(list(queries), prompts=prompts, labels=labels)
    return _as_tensors(answer)


def _as_tensors(answer: dict[str, Any]) -> dict[str, Any]:
    import torch  # here, not at the top: the SDK must import without torch

    logs = answer.get("extra_logs") or {}
    return {
        "rewards": torch.tensor(answer["rewards"], dtype=torch.float32),
        "scores": torch.tensor(answer.get("scores", answer["rewards"]), dtype=torch.float32),
        "extra_logs": {k: torch.tensor(v, dtype=torch.float32) for k, v in logs.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rlmec.clients.adapters.openrlhf",
        description="Print the OpenRLHF flags that use the RLMEC reward service.",
    )
    parser.add_argument("--url", default=os.environ.get(URL_ENV), help="reward service URL")
    parser.add_argument("--label-key", default="answer", help="dataset column of references")
    parser.add_argument("--legacy", action="store_true", help="--remote_rm_url spelling")
    parser.add_argument(
        "--use-file", action="store_true", help="reward-function file (sends $RLMEC_API_KEY)"
    )
    parser.add_argument("--print-file", action="store_true", help="print only the file path")
    args = parser.parse_args(argv)
    if args.print_file:
        print(reward_file())
        return 0
    if not args.url and not args.use_file:
        print("error: pass --url http://HOST:PORT (or set $RLMEC_URL)", file=sys.stderr)
        return 2
    try:
        flags = openrlhf_flags(
            args.url, label_key=args.label_key, legacy=args.legacy, use_file=args.use_file
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(" ".join(flags))
    return 0


if __name__ == "__main__":
    sys.exit(main())
