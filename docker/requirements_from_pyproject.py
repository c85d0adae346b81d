"""Print the project's runtime requirements from pyproject.toml, one per line, for an image build.

The Dockerfiles install these under the lock file (`pip install -c requirements.lock -r -`) in a layer
that changes only when pyproject.toml or the lock changes; the project's own code is installed after,
with `--no-deps`, so editing `ml/` does not reinstall the stack.

    python docker/requirements_from_pyproject.py pyproject.toml [--extras k8s,other]
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path


class PyprojectError(ValueError):
    """pyproject.toml lacks what the image build needs; the message says what and where."""


def requirements(pyproject: Path, extras: Sequence[str] = ()) -> list[str]:
    """The `[project] dependencies` of `pyproject`, plus those of each optional-dependency group in `extras`."""
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    except FileNotFoundError as exc:
        raise PyprojectError(f"{pyproject} does not exist: build from the repository root") from exc
    except (tomllib.TOMLDecodeError, KeyError) as exc:
        raise PyprojectError(f"{pyproject} has no readable [project] table: {exc}") from exc
    reqs = list(project.get("dependencies", []))
    groups = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in groups:
            known = ", ".join(sorted(groups)) or "none"
            raise PyprojectError(
                f"{pyproject} has no optional-dependency group {extra!r} (known: {known}); "
                f"add it under [project.optional-dependencies] and regenerate requirements.lock"
            )
        reqs.extend(groups[extra])
    if not reqs:
        raise PyprojectError(f"{pyproject} lists no dependencies")
    return reqs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject", type=Path)
    parser.add_argument("--extras", default="", help="comma-separated optional-dependency groups")
    args = parser.parse_args(argv)
    extras = [e.strip() for e in args.extras.split(",") if e.strip()]
    try:
        reqs = requirements(args.pyproject, extras)
    except PyprojectError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write("\n".join(reqs) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
