"""``python -m modelyard.training.builtin NAME``: run a built-in trainer inside a training run.

The job comes from `modelyard.training.current_run()`; a job the trainer cannot run is refused
before training starts. Errors go to stderr as one line; the exit code is the error's (3 for a
bad job), as for the modelyard CLI.
"""

from __future__ import annotations

import os
import sys

from modelyard.errors import ModelyardError

USAGE = "usage: python -m modelyard.training.builtin NAME   (NAME: {names})"


def main(argv: list[str]) -> int:
    from modelyard.training.builtin import TRAINERS, check_supported, trainer
    from modelyard.training.run_api import ENV_JOB_FILE, current_run

    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(USAGE.format(names=", ".join(TRAINERS)), file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        chosen = trainer(argv[0])
        run = current_run()
        check_supported(run.job, world_size=run.world_size, source=os.environ.get(ENV_JOB_FILE, "job.json"))
        from modelyard.training.builtin.train import train

        train(chosen, run)
    except ModelyardError as exc:
        print(f"error: {exc.render()}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
