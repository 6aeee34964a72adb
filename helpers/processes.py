"""Child processes whose output lines a parent relays: :class:`ProcessLines`, and :data:`NOISE`, the
start-up lines (TensorFlow, XLA, absl) not worth relaying.

Shared by the notebook runner (:mod:`helpers.run`) and the training workers
(:func:`helpers.training.train_many`); it imports neither.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

# Lines a kernel writes to stderr that say nothing to a user (TensorFlow / XLA / absl start-up).
NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog"
    r"|[IWE]\d{4} [\d:.]+\s+\d+ \S+:\d+\]"  # absl / glog lines: I0000 00:00:... file.cc:12]
    r"|.*(oneDNN custom operations|cuda drivers|cuInit|TF-TRT|rebuild TensorFlow with the appropriate"
    r"|This TensorFlow binary is optimized|Unable to register cu(DNN|FFT|BLAS) factory)"
    r"|To enable the following instructions"
    r"|\[IPKernelApp\] WARNING \| Kernel is running over TCP without encryption"
    r"|WARNING:tensorflow:.*triggered tf\.function retracing"  # one per model built in a loop
    r"|.*TqdmWarning: IProgress not found|\s*from \.autonotebook import tqdm as notebook_tqdm)"
)


class ProcessLines:
    """Subprocesses started by key whose output lines (stdout and stderr) arrive on one queue.

    :meth:`next` returns ``(key, line)``, and ``(key, None)`` once that process has closed its
    output; :meth:`finish` then waits for it and returns its exit code. The last ``tail`` lines of
    each are kept for error messages. Used by the notebook runner (``--jobs``) and by
    ``helpers.training.train_many``'s workers; as a context manager it stops what is still running
    when the block exits (an error or an interrupt).
    """

    def __init__(self, env: dict | None = None, tail: int = 30):
        import collections
        import queue

        # the children import this package (``python -m helpers...``) and print line by line;
        # ``env`` adds to or overrides this process's environment
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(
                [str(Path(__file__).resolve().parents[1]), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
            **(env or {}),
        }
        self.running = {}
        self.tails = collections.defaultdict(lambda: collections.deque(maxlen=tail))
        self._lines: queue.Queue = queue.Queue()

    def start(self, key, cmd: list[str]) -> None:
        import subprocess

        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env
        )
        threading.Thread(target=self._relay, args=(key, proc.stdout), daemon=True).start()
        self.running[key] = proc

    def _relay(self, key, stream) -> None:
        for line in stream:
            self._lines.put((key, line.rstrip("\n")))
        self._lines.put((key, None))

    def next(self):
        key, line = self._lines.get()
        if line is not None:
            self.tails[key].append(line)
        return key, line

    def finish(self, key) -> int:
        return self.running.pop(key).wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        for proc in self.running.values():
            proc.terminate()
        for proc in self.running.values():
            proc.wait()
        self.running.clear()
