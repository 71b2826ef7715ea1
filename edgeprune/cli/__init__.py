"""`edgeprune` command line. Choices (formats, precisions, runtimes, criteria, build values and baselines) come from
the registries' name lists, not from copies: options.py shares the options, helpers.py the loading and output,
measure.py and compress.py hold the commands, group.py the group and the exit codes. Those lists import no
toolchain and each command imports torch and the runtimes inside its body, so `--help`, `targets` and usage errors
answer at once (tests/test_cli_startup.py keeps it so).

Exit codes: 0 ok; 2 user error (one line, no traceback); 3 a verification/budget gate failed (report written);
130 interrupted (Ctrl-C); anything else is a bug and shows its traceback.
"""

from edgeprune.cli.group import app, main

__all__ = ["app", "main"]
