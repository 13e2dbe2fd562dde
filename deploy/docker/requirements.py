"""Print rlmec's requirements for a container image, leaving out the packages the base image
already provides (e.g. the CUDA build of torch in a vLLM image), so pip never swaps them.

    python3 deploy/docker/requirements.py serve --exclude torch transformers > /tmp/req.txt
"""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def requirements(extras: list[str], exclude: set[str]) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in extras:
        wanted += project["optional-dependencies"][extra]
    out: list[str] = []
    for req in wanted:
        name = re.split(r"[\[<>=!~ ;]", req, maxsplit=1)[0].lower()
        if name == "rlmec" or name in exclude or req in out:
            continue
        out.append(req)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("extras", nargs="*", help="optional-dependency groups, e.g. serve")
    parser.add_argument("--exclude", nargs="*", default=[], help="distribution names to skip")
    args = parser.parse_args()
    print("\n".join(requirements(args.extras, {e.lower() for e in args.exclude})))


if __name__ == "__main__":
    main()
