"""Command lines with sub-commands, e.g. ``python -m dvis_d2.diagnostics candidates ...``."""

import sys
from typing import Any, Callable, Mapping, Optional, Sequence


def run_command(
    commands: Mapping[str, Callable[..., Any]], prog: str, argv: Optional[Sequence[str]] = None
) -> Any:
    """Run the command named by the first argument of ``argv`` (default: ``sys.argv[1:]``) as
    ``commands[name](rest, prog=f"{prog} {name}")``; return its result.

    Raises:
        SystemExit: naming the commands, when the first argument is none of them.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in commands:
        raise SystemExit(
            f"usage: {prog} {{{','.join(commands)}}} ... (-h for a command's options); "
            f"got {argv[:1] or 'nothing'}"
        )
    return commands[argv[0]](argv[1:], prog=f"{prog} {argv[0]}")
