"""`python -m tunesmith.ui.train_child train CONFIG [--resume]`: `tunesmith train` as the dashboard
launches it, with Ctrl-C's handler put back first.

Stop sends SIGINT. A process started with SIGINT ignored (the dashboard under nohup, or put in the
background by a script: shells start `cmd &` with SIGINT ignored) passes that on to its children,
and Python then never installs its KeyboardInterrupt handler: train would ignore Stop until SIGTERM
killed it mid-step. Restoring the handler makes Stop the same clean stop as Ctrl-C in a terminal.
"""

from __future__ import annotations

import signal
import sys


STOPPED = "tunesmith train: stopped (SIGINT from the dashboard's Stop); metrics.jsonl and checkpoints kept, Resume continues"


def main() -> int:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from ..cli import main as cli_main

    try:
        return cli_main(sys.argv[1:])
    except KeyboardInterrupt:  # train has put back what it moved aside; a stop is not a crash: no traceback
        print(STOPPED, file=sys.stderr, flush=True)
        return 130  # what a shell reports for Ctrl-C


if __name__ == "__main__":
    sys.exit(main())
