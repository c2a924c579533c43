"""``sluice-rules-build``: builds a Python rule into a sluice rules component.

    sluice-rules-build app.py -o rules.wasm [-p extra/path ...] [--componentize-py PATH]

runs componentize-py 0.25.1 (the pinned version; another is refused) against the WIT shipped
in this package (world ``sluice:rules/rules@0.2.0``) with ``--stub-wasi``, which keeps the
sockets, filesystem, clock and HTTP imports sluice refuses out of the component. ``app.py``
must bind ``WitWorld = export(MyRule)``. The SDK and the app's directory are on the module
path. Exits with componentize-py's status; the error names the missing tool.

Builds are not byte-reproducible: each rebuild is a new rules version to sluice.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

#: The componentize-py version this SDK is built and tested with.
COMPONENTIZE_PY_VERSION = "0.25.1"

#: The shipped WIT directory.
WIT = Path(__file__).resolve().parent / "wit"


def command(app: Path, output: Path, tool: str, extra_paths=()) -> list:
    """The componentize-py command line that builds ``app`` into ``output``.

    >>> command(Path("/r/app.py"), Path("o.wasm"), "componentize-py")[3:7]
    ['-w', 'rules', 'componentize', '--stub-wasi']
    """
    sdk_root = Path(__file__).resolve().parent.parent
    args = [tool, "-d", str(WIT), "-w", "rules", "componentize", "--stub-wasi"]
    for path in (sdk_root, app.resolve().parent, *extra_paths):
        args += ["-p", str(path)]
    args += [app.stem, "-o", str(output)]
    return args


def main(argv=None) -> int:
    """The command's entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="sluice-rules-build", description=__doc__.split("\n\n")[0])
    parser.add_argument("app", type=Path, help="the rule's module, binding WitWorld")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("-p", "--path", action="append", default=[], help="extra module path")
    parser.add_argument(
        "--componentize-py",
        default=os.environ.get("COMPONENTIZE_PY") or shutil.which("componentize-py"),
        help="the componentize-py executable (default: $COMPONENTIZE_PY, else on PATH)",
    )
    args = parser.parse_args(argv)
    tool = args.componentize_py
    if not tool:
        print(
            f"sluice-rules-build: componentize-py not found; install componentize-py=={COMPONENTIZE_PY_VERSION} "
            "(pip install 'sluice-rules[build]', or scripts/install-guest-toolchains in the sluice repository)",
            file=sys.stderr,
        )
        return 2
    version = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout
    if COMPONENTIZE_PY_VERSION not in version:
        print(
            f"sluice-rules-build: {tool} is {version.strip() or 'of unknown version'}; this SDK needs componentize-py {COMPONENTIZE_PY_VERSION}",
            file=sys.stderr,
        )
        return 2
    return subprocess.run(command(args.app, args.output, tool, args.path)).returncode


if __name__ == "__main__":
    sys.exit(main())
