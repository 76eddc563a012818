"""The `memjax` command line."""

from memjax.cli._main import (
    DATA_ROOT_HELP,
    EXIT_CODES,
    RESUME,
    main,
)

__all__ = [
    "DATA_ROOT_HELP",
    "EXIT_CODES",
    "RESUME",
    "main",
]
