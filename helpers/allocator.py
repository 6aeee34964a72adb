"""The memory allocator of the processes that train: TCMalloc through ``LD_PRELOAD`` where installed.

With glibc's allocator, TensorFlow on CPU frees each step's large tensors back to the operating system
and faults them in again at the next step: a third of a training worker's CPU time went to the kernel
(zeroing and mapping pages). TCMalloc keeps those pages, and a training step runs on user time instead
(``benchmarks/cpu_training.py`` measures it against glibc, paired in one run).

An allocator can only be preloaded into a process before it starts, so the suite sets ``LD_PRELOAD``
for the processes it starts itself: the notebook kernels of :mod:`helpers.run`, the training workers of
:func:`helpers.training.train_many` and ``make test``. Choose with ``SIMSUITE_ALLOCATOR``:
``tcmalloc`` (the default), ``jemalloc`` or ``system`` (glibc, nothing preloaded). Where the library is
missing everything runs as before, on glibc, and :func:`describe` says what was skipped.

``python -m helpers.allocator`` prints the ``LD_PRELOAD`` value (empty when there is none): the
Makefile's ``make test`` uses it.
"""

from __future__ import annotations

import glob
import os
import sys
from pathlib import Path

ENV = "SIMSUITE_ALLOCATOR"
DEFAULT = "tcmalloc"
# name -> (shared library, Debian package that ships it)
LIBRARIES = {
    "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc-minimal4"),
    "jemalloc": ("libjemalloc.so.2", "libjemalloc2"),
}
SEARCH = ("/usr/lib/*-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")
# TCMalloc reports every allocation over 1 GiB on stderr; the full profile's data sets make some
QUIET = {"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(1 << 40)}


def choice(environ=None) -> str:
    """The allocator asked for: ``SIMSUITE_ALLOCATOR`` or the default; a bad value raises."""
    value = (environ if environ is not None else os.environ).get(ENV, DEFAULT).strip().lower() or DEFAULT
    if value != "system" and value not in LIBRARIES:
        raise ValueError(
            f"{ENV}={value!r} is not an allocator; choose one of: system, {', '.join(LIBRARIES)}"
        )
    return value


def find(name: str, search=None) -> Path | None:
    """The path of allocator ``name``'s shared library (looked for in ``search``, default
    :data:`SEARCH`), or None where it is not installed."""
    library = LIBRARIES[name][0]
    for pattern in SEARCH if search is None else search:
        for folder in sorted(glob.glob(pattern)):
            path = Path(folder) / library
            if path.is_file():
                return path
    return None


def preload_env(name: str | None = None, environ=None) -> dict[str, str]:
    """The variables that make a child process use allocator ``name`` (default: :func:`choice`).

    ``LD_PRELOAD`` keeps what ``environ`` already preloads; an empty dict means the system allocator,
    asked for or because the library is missing.
    """
    environ = os.environ if environ is None else environ
    name = name or choice(environ)
    path = None if name == "system" else find(name)
    if path is None:
        return {}
    present = [p for p in environ.get("LD_PRELOAD", "").replace(":", " ").split() if p]
    if str(path) not in present:
        present.insert(0, str(path))
    return {"LD_PRELOAD": " ".join(present), **QUIET}


def describe(environ=None) -> str:
    """One line for a run's log: the allocator its processes get, or what was skipped and how to fix it."""
    name = choice(environ)
    if name == "system":
        return f"allocator: glibc malloc ({ENV}=system)"
    path = find(name)
    if path is None:
        package = LIBRARIES[name][1]
        return (
            f"allocator: {name} skipped ({package} is not installed; training pays page faults to the "
            f"kernel): sudo apt-get install {package}"
        )
    return f"allocator: {name} ({path})"


def main(argv=None) -> int:
    """Print the ``LD_PRELOAD`` value for the chosen allocator (empty line when there is none)."""
    try:
        print(preload_env().get("LD_PRELOAD", ""))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
