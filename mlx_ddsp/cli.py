"""What every `python -m mlx_ddsp.<command>` shares: user errors as one line, and the native-library re-exec on Linux."""

from __future__ import annotations

import sys
from typing import Callable

from rich.console import Console


class UserError(Exception):
    """A problem the user can fix (bad recipe, missing file, no checkpoint...): printed as one sentence, exit 1."""


def run(action: Callable[[Console], object]) -> int:
    """Call action(console) and return its exit status (an int result, else 0); a UserError becomes
    'error: <message>' on stderr and exit status 1."""
    console = Console(stderr=True)
    try:
        result = action(console)
        return result if isinstance(result, int) else 0
    except UserError as e:
        console.print(f"[red]error:[/red] {e}", soft_wrap=True)
        return 1


def entry_point(main: Callable[[], int]) -> None:
    """`if __name__ == "__main__": entry_point(main)`: use OpenBLAS and tcmalloc when available (Linux), then exit
    with main()."""
    from mlx_ddsp.native import use_native_libraries

    use_native_libraries()
    sys.exit(main())
