"""Write docs/cli.md from the live `nirmpi --help` texts (a test checks it is current)."""

import contextlib
import io
import os
import sys
from pathlib import Path

from napari_nirmpi.cli import build_parser

COMMANDS = ["simulate", "reconstruct", "sample", "batch", "demo", "info"]


def help_text(args):
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal: fix it so the file is stable
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):
        build_parser().parse_args(args + ["--help"])
    return buf.getvalue().rstrip()


def render() -> str:
    out = ["# Command-line reference", "",
           "Generated from `nirmpi --help` by `python scripts/gen_cli_docs.py`; do not edit by hand.",
           "Every command exits with status 0 on success and 2 on bad input, with a one-line message "
           "on stderr.", "", "```text", help_text([]), "```", ""]
    for c in COMMANDS:
        out += [f"## nirmpi {c}", "", "```text", help_text([c]), "```", ""]
    return "\n".join(out)


if __name__ == "__main__":
    target = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
    target.write_text(render())
    print(f"wrote {target}", file=sys.stderr)
