"""``python -m modelyard.docsgen [api] [cli] [settings] [--out docs/reference] [--check]``:
rewrite the generated reference pages (all by default), or with ``--check`` exit 1 naming the
stale ones."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from modelyard.docsgen import api, cli, settings

PAGES: dict[str, Callable[[], str]] = {
    "api": lambda: api.render(*api.collect()),
    "cli": lambda: cli.render(),
    "settings": lambda: settings.render(),
}


def write(path: Path, text: str) -> None:
    """Temp file, then rename: a failed run never leaves half a page."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelyard.docsgen", description=__doc__)
    parser.add_argument("pages", nargs="*", metavar="{api,cli,settings}",
                        help="which pages (default: all)")
    parser.add_argument("--out", type=Path, default=Path("docs/reference"))
    parser.add_argument("--check", action="store_true", help="only say which are stale")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.pages) - set(PAGES))
    if unknown:
        parser.error(f"unknown page {unknown[0]!r}; known: {', '.join(PAGES)}")
    stale = []
    for name in args.pages or list(PAGES):
        path = args.out / f"{name}.md"
        text = PAGES[name]()
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(str(path))
        else:
            write(path, text)
            print(f"wrote {path}")
    if stale:
        print("stale: " + ", ".join(stale) + "; run python -m modelyard.docsgen",
              file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
