"""``rlmec down``: stop what ``rlmec up`` started (see :mod:`rlmec.loop.up`)."""

from __future__ import annotations

import argparse

from rlmec.loop.up import add_down_commands


def add_commands(parser: argparse.ArgumentParser) -> None:
    add_down_commands(parser)
