"""Run the numbered notebooks headless with papermill, then write an HTML gallery of the run.

    python -m helpers.run --profile smoke|default|full [--only 01,04] [-p epochs=3 ...] [--output-root DIR]

Every ``notebooks/NN_*.ipynb`` is executed into ``runs/<profile>/`` (git-ignored); each receives
``profile`` and reads its settings from :mod:`helpers.profiles` (a new notebook adds its entry there,
not here). ``-p NAME=VALUE`` overrides a setting (the value read as YAML) in every notebook that
takes it (:func:`helpers.profiles.knobs`; papermill injects them as the notebook's ``overrides``); a
name no notebook of the run takes is a usage error.
``--jobs N`` (default: the profile's, :data:`JOBS`) runs up to
``N`` notebooks at once, each in its own process, a notebook starting once the notebooks it
``needs`` have finished (:func:`notebook_needs`: its metadata, or every earlier notebook). The run
stops at the first failing notebook (with ``--jobs``, once the ones already running end) and names
it. At the end, ``runs/<profile>/index.html`` shows the evaluation table, every image the run wrote
(grouped by the notebook that wrote it) and links to the executed notebooks, rendered to HTML (the
``.ipynb`` beside each).

Each profile keeps its outputs: the figures, latent-space and explanation images and the evaluation
CSV go to ``runs/<profile>/`` too, and the models to ``models_cache/<dataset>/`` (one folder per
dataset, shared by the profiles that train on it; the smoke profile keeps its own under
``runs/smoke/models_cache``). ``--output-root`` sends all of them elsewhere.

While it runs, the terminal shows the notebook, each code cell as it starts, and what the kernel
prints (one line per model and epoch during training), without the TensorFlow start-up noise; with
``--jobs``, each line starts with its notebook's number.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import io
import json
import logging
import os
import re
import sys
import threading
import time
import urllib.parse
from pathlib import Path

from helpers import allocator, config, profiles, provenance
from helpers.processes import NOISE, ProcessLines

# Notebooks run at once, by profile. One notebook rarely keeps two CPU cores busy (kernel start-up,
# imports, UMAP, t-SNE, plots, models too small to use two threads), so two independent notebooks
# side by side finish sooner (benchmarks/results/suite_time.json: the default run with --jobs 1 and 2,
# and the cores each kept busy). A GPU run keeps to one at a time.
JOBS = {"smoke": 2, "default": 2, "full": 1}

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".svg"}


RUN_KERNEL = "simsuite-run"
# The kernels' environment: no TensorFlow / XLA start-up logging, no warnings a user cannot act on
KERNEL_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "PYTHONUNBUFFERED": "1",
    "PYTHONWARNINGS": "ignore::DeprecationWarning,ignore::FutureWarning,"
    "ignore::UserWarning:umap.umap_,ignore:IProgress not found",
}


def ensure_run_kernel() -> str:
    """Make the kernel ``simsuite-run`` start this very interpreter, and return its name.

    A ``python3`` kernelspec installed elsewhere (another virtual environment, the system Python)
    would otherwise win, and the notebooks would run without this environment's packages. The spec
    lives in ``.cache/jupyter`` and is put first on ``JUPYTER_PATH`` for the kernels we start.
    """
    folder = config.ROOT / ".cache" / "jupyter"
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python ({Path(sys.executable).parent.parent.name})",
        "language": "python",
        # the kernels train: they get the faster allocator (helpers.allocator) where it is installed
        "env": {**KERNEL_ENV, **allocator.preload_env()},
    }
    config.write_json(folder / "kernels" / RUN_KERNEL / "kernel.json", spec)
    paths = os.environ.get("JUPYTER_PATH", "")
    if str(folder) not in paths.split(os.pathsep):
        os.environ["JUPYTER_PATH"] = os.pathsep.join(p for p in (str(folder), paths) if p)
    return RUN_KERNEL


class NotebookFailed(RuntimeError):
    """A notebook of the run raised; the message names it and where its executed copy is."""


class RunUsageError(ValueError):
    """Bad arguments to a run: an unknown profile or notebook, a parameter no notebook takes."""


def parse_overrides(pairs) -> dict:
    """``["epochs=3", "models=[cnn_simple_v1]"]`` -> ``{"epochs": 3, "models": ["cnn_simple_v1"]}``:
    each value is read as YAML (``3`` a number, ``null`` None, ``[a, b]`` a list, ``abc`` a string)."""
    import yaml

    overrides = {}
    for pair in pairs or []:
        name, sep, text = pair.partition("=")
        if not sep or not name.strip().isidentifier():
            raise RunUsageError(f"-p takes NAME=VALUE, e.g. -p epochs=3; got {pair!r}")
        try:
            overrides[name.strip()] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            problem = str(exc).splitlines()[0]
            raise RunUsageError(f"-p {name}: {text!r} is not a YAML value ({problem}); quote it") from None
    return overrides


def check_overrides(overrides: dict, declared: dict[str, set]) -> None:
    """Refuse an override that none of the run's notebooks takes (``declared``: name -> its knobs)."""
    known = set().union(*declared.values()) if declared else set()
    unknown = sorted(set(overrides or {}) - known)
    if unknown:
        raise RunUsageError(
            f"no notebook of this run takes {', '.join(map(repr, unknown))}; "
            f"the parameters they take: {', '.join(sorted(known))}"
        )


def notebooks(folder: Path | None = None) -> list[Path]:
    """The numbered notebooks ``NN_*.ipynb`` in order."""
    folder = Path(folder or config.NOTEBOOKS)
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb") if p.is_file())


def output_folders() -> list[Path]:
    """Where notebooks write images (scanned before and after each notebook)."""
    return [config.FIGURES, config.MODELS_CACHE, config.LATENT_SPACE, config.MODELS_EXPLAIN]


def _snapshot() -> dict[Path, float]:
    """Every image under the output folders, with its modification time.

    Notebooks of a parallel run write (and training removes its ``.work`` folders) while this
    walks, so a folder or file that vanishes mid-walk is skipped: ``os.walk`` ignores a folder
    it can no longer list, and a file gone before its ``stat`` is left out.
    """
    found = {}
    for folder in output_folders():
        for dirpath, _dirnames, filenames in os.walk(folder):
            for name in filenames:
                if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                path = Path(dirpath) / name
                try:
                    found[path] = path.stat().st_mtime_ns
                except FileNotFoundError:
                    continue
    return found


_OUTPUTS = {  # environment variable -> (config attribute, path under an output root)
    "SIMSUITE_MODELS_CACHE": ("MODELS_CACHE", "models_cache"),
    "SIMSUITE_LATENT_SPACE": ("LATENT_SPACE", "latent_space"),
    "SIMSUITE_MODELS_EXPLAIN": ("MODELS_EXPLAIN", "models_explain"),
    "SIMSUITE_FIGURES": ("FIGURES", "figures"),
    "SIMSUITE_EVALUATION_CSV": ("EVALUATION_CSV", "model_evaluation.csv"),
    "SIMSUITE_TENSORBOARD": ("TENSORBOARD", "tensorboard"),
}


def set_output_root(root: str | os.PathLike, keep: tuple[str, ...] = (), respect_env: bool = False) -> None:
    """Send every output of the run (and of the notebook kernels it starts) under ``root``.

    ``keep`` names outputs (``"models_cache"``…) left where they are; with ``respect_env`` an
    output already set by a ``SIMSUITE_*`` environment variable stays there.
    """
    root = Path(root).resolve()
    for key, (attr, sub) in _OUTPUTS.items():
        if sub in keep or (respect_env and key in os.environ):
            continue
        os.environ[key] = str(root / sub)
        # this process's config too (kernels read the environment when they import helpers.config)
        setattr(config, attr, root / sub)


def set_profile_outputs(profile: str, run_dir: Path) -> None:
    """Each profile's outputs in its run folder; models stay in the shared, per-dataset cache
    (``models_cache/<dataset>/``), except the smoke profile's throw-away models."""
    set_output_root(run_dir, keep=() if profile == "smoke" else ("models_cache",), respect_env=True)


def notebook_needs(nb: Path, numbers) -> set[str]:
    """The numbers (``"04"``) of the notebooks among ``numbers`` whose outputs ``nb`` reads.

    A notebook names them in its metadata, ``{"simsuite": {"needs": ["04"]}}`` (``[]``: it reads
    nothing another notebook writes); one that says nothing needs every earlier notebook, so a new
    notebook runs after the others until it says otherwise.
    """
    import nbformat

    number = nb.name[:2]
    meta = nbformat.read(nb, as_version=4).metadata.get("simsuite", {})
    if "needs" not in meta:
        return {n for n in numbers if n < number}
    needs = meta["needs"]
    if not isinstance(needs, list) or not all(
        isinstance(n, str) and re.fullmatch(r"\d\d", n) and n < number for n in needs
    ):
        raise ValueError(
            f"{nb.name}: metadata simsuite.needs must list the two-digit numbers of earlier notebooks, "
            f"e.g. ['04'], or be [] for none; got {needs!r}"
        )
    return set(needs) & set(numbers)


def notebook_knobs(nb: Path) -> set[str]:
    """The settings ``-p`` may override in ``nb``: its :func:`helpers.profiles.knobs` when its
    ``parameters`` cell declares ``overrides``, else none."""
    import papermill

    if "overrides" not in papermill.inspect_notebook(str(nb)):
        return set()
    try:
        return profiles.knobs(nb.stem)
    except profiles.ProfileError as exc:
        raise RunUsageError(f"{nb.name} declares overrides: {exc}") from None


def notebook_parameters(nb: Path, profile: str, overrides: dict) -> dict:
    """What papermill injects into ``nb``: ``profile`` where its ``parameters`` cell declares it,
    and ``overrides``, the run's overrides among the notebook's knobs (when there are any)."""
    import papermill

    declared = papermill.inspect_notebook(str(nb))
    params = {"profile": profile} if "profile" in declared else {}
    knobs = notebook_knobs(nb)
    mine = {k: v for k, v in (overrides or {}).items() if k in knobs}
    if mine:
        params["overrides"] = mine
    return params


def run(
    profile: str = "default",
    only: list[str] | None = None,
    run_dir: Path | None = None,
    kernel_name: str | None = None,
    overrides: dict | None = None,
    notebooks_dir: Path | None = None,
    jobs: int = 1,
    part: Path | None = None,
    position: tuple[int, int] | None = None,
) -> dict:
    """Execute the notebooks of ``profile`` and write the gallery; return the run record.

    ``jobs`` notebooks run at once (each in a ``python -m helpers.run --only NN`` process) when it
    is more than one. ``part`` and ``position`` serve those processes: the record goes to ``part``
    (no gallery), and the progress line numbers the notebook ``position`` = (k, n) of the whole run.
    """
    _check_run_arguments(profile, jobs)
    overrides = dict(overrides or {})
    kernel_name = kernel_name or ensure_run_kernel()
    if part is None:
        print(f"== {allocator.describe()}", flush=True)
    run_dir = Path(run_dir or config.RUNS / profile).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    selected = _select_notebooks(only, notebooks_dir, overrides, whole_run=part is None)
    record = {
        "profile": profile,
        "parameters": {"profile": profile, **overrides},
        "overrides": overrides,
        "notebooks": [],
        "run_dir": str(run_dir),
        "jobs": jobs,
    }
    start = time.perf_counter()
    if int(jobs) > 1 and len(selected) > 1:
        entries = _run_concurrently(
            selected, profile, overrides, run_dir, kernel_name, int(jobs), notebooks_dir
        )
    else:
        entries = _run_one_by_one(selected, profile, overrides, run_dir, kernel_name, position)
    record["seconds"] = time.perf_counter() - start
    if part is not None:  # one notebook of a run with --jobs: the parent credits the images
        record["notebooks"] = entries
        config.write_json(part, record)
        return record
    return _finish_run(record, entries, run_dir)


def _check_run_arguments(profile: str, jobs) -> None:
    """Refuse an unknown profile or fewer than one notebook at a time."""
    if profile not in profiles.PROFILES:
        raise RunUsageError(f"unknown profile {profile!r}; choose one of: {', '.join(profiles.PROFILES)}")
    if int(jobs) < 1:
        raise RunUsageError(f"jobs must be at least 1, got {jobs!r}")


def _select_notebooks(only, notebooks_dir, overrides: dict, whole_run: bool) -> list[Path]:
    """The notebooks ``only`` names (all when None). Each one's knobs are read (a notebook that
    declares ``overrides`` without settings is a usage error); for a ``whole_run`` (not one notebook
    of a run with --jobs, which takes a subset) an override none of them takes is refused."""
    selected = [nb for nb in notebooks(notebooks_dir) if not only or nb.name[:2] in only]
    if not selected:
        raise RunUsageError(f"no notebook matches --only {only}; notebooks are in {config.NOTEBOOKS}")
    declared = {nb.name: notebook_knobs(nb) for nb in selected}
    if whole_run:
        check_overrides(overrides, declared)
    return selected


def _run_one_by_one(selected, profile, overrides, run_dir, kernel_name, position) -> list[dict]:
    """Run ``selected`` in order in this process; their record entries. ``position``, when given,
    numbers each progress line instead of its place among ``selected``."""
    last_times = _last_run_seconds(run_dir)
    entries = []
    for i, nb in enumerate(selected, start=1):
        nb_params = notebook_parameters(nb, profile, overrides)
        entries.append(
            _run_notebook(nb, position or (i, len(selected)), nb_params, run_dir, kernel_name, last_times)
        )
    return entries


def _finish_run(record: dict, entries: list[dict], run_dir: Path) -> dict:
    """Complete a whole run's ``record`` (credited images, provenance), write ``run.json`` and the
    gallery, print the closing line; return the record."""
    record["notebooks"] = credit_images(entries)
    record["provenance"] = provenance.provenance()
    config.write_json(run_dir / "run.json", record)
    gallery = write_gallery(record, run_dir)
    print(f"== run finished in {record['seconds']:.1f}s; gallery: {gallery}", flush=True)
    return record


def _run_notebook(nb: Path, position, nb_params: dict, run_dir: Path, kernel_name: str, last_times) -> dict:
    """Execute one notebook into ``run_dir``; its record entry (images: see :func:`credit_images`)."""
    import tempfile

    import papermill

    out = run_dir / nb.name
    last = f" (last run: {last_times[nb.name]:.0f}s)" if nb.name in last_times else ""
    print(
        f"== [{position[0]}/{position[1]}] {nb.name}{last} {json.dumps(nb_params, default=str)}", flush=True
    )
    saved_log = os.environ.get("SIMSUITE_IMAGE_LOG")
    with tempfile.TemporaryDirectory(prefix="simsuite-images-") as tmp:
        image_log = Path(tmp) / "images.txt"
        os.environ["SIMSUITE_IMAGE_LOG"] = str(image_log)  # the kernel inherits it (config.log_image)
        before = _snapshot()
        t0 = time.perf_counter()
        try:
            execute(nb, out, nb_params, kernel_name)
        except papermill.PapermillExecutionError as exc:
            raise NotebookFailed(
                f"{nb.name} failed at cell {exc.exec_count}: {exc.ename}: {exc.evalue} (executed copy: {out})"
            ) from None
        finally:
            if saved_log is None:
                os.environ.pop("SIMSUITE_IMAGE_LOG", None)
            else:
                os.environ["SIMSUITE_IMAGE_LOG"] = saved_log
            html_copy = render_html(out) if out.exists() else None
        seconds = time.perf_counter() - t0
        logged = image_log.read_text(encoding="utf-8").splitlines() if image_log.exists() else []
    after = _snapshot()
    images = sorted(str(p) for p, m in after.items() if before.get(p) != m)
    print(f"   {nb.name} done in {seconds:.1f}s, {len(images)} images", flush=True)
    return {
        "name": nb.name,
        "seconds": seconds,
        "executed": str(out),
        "images": images,
        "logged_images": sorted({p for p in logged if Path(p).is_file()}),
        "parameters": nb_params,
        "html": str(html_copy) if html_copy else None,
    }


def credit_images(entries: list[dict]) -> list[dict]:
    """Each notebook's images: those its kernel logged writing (``config.log_image``), and those that
    changed while it ran that no notebook logged. (While two notebooks run at once, an image that
    changed during one's run may be the other's.)"""
    logged = {p for entry in entries for p in entry.get("logged_images", [])}
    credited = []
    for entry in entries:
        own = set(entry.get("logged_images", [])) | {p for p in entry["images"] if p not in logged}
        credited.append({**{k: v for k, v in entry.items() if k != "logged_images"}, "images": sorted(own)})
    return credited


def _run_concurrently(selected, profile, overrides, run_dir, kernel_name, jobs, notebooks_dir) -> list[dict]:
    """Run ``selected`` ``jobs`` at a time, each in a ``python -m helpers.run --only NN`` process,
    starting a notebook once those it needs have finished; relay their lines; raise on a failure."""
    import tempfile

    numbers = [nb.name[:2] for nb in selected]
    needs = {nb.name: notebook_needs(nb, numbers) for nb in selected}
    print(
        f"== running {len(selected)} notebooks, {jobs} at a time, each after those it needs: "
        + ", ".join(
            f"{nb.name[:2]} (after {', '.join(sorted(needs[nb.name]))})" if needs[nb.name] else nb.name[:2]
            for nb in selected
        ),
        flush=True,
    )
    pending, done, entries, parts = list(selected), set(), {}, {}
    failed = None
    with tempfile.TemporaryDirectory(prefix="simsuite-run-") as tmp, ProcessLines(tail=20) as procs:
        while pending or procs.running:
            ready = [nb for nb in pending if needs[nb.name] <= done] if failed is None else []
            for nb in ready[: jobs - len(procs.running)]:
                pending.remove(nb)
                parts[nb.name] = Path(tmp) / f"{nb.stem}.json"
                cmd = [
                    sys.executable, "-m", "helpers.run", "--profile", profile, "--only", nb.name[:2],
                    "--jobs", "1", "--run-dir", str(run_dir), "--kernel", kernel_name,
                    "--part", str(parts[nb.name]), "--position", f"{selected.index(nb) + 1}/{len(selected)}",
                    "--overrides", json.dumps(overrides or {}, default=str),
                ]  # fmt: skip
                if notebooks_dir is not None:
                    cmd += ["--notebooks-dir", str(notebooks_dir)]
                procs.start(nb.name, cmd)
            if not procs.running:
                break  # a failure left the rest unstarted
            name, line = procs.next()
            if line is not None:
                print(f"[{name[:2]}] {line}", flush=True)
            elif procs.finish(name) == 0:
                entries[name] = json.loads(parts[name].read_text())["notebooks"][0]
                done.add(name[:2])
            elif failed is None:
                failed = name
    if failed is not None:
        tail = procs.tails[failed]
        reason = next((ln for ln in reversed(tail) if ln.startswith("RUN FAILED: ")), None)
        raise NotebookFailed(
            reason[len("RUN FAILED: ") :]
            if reason
            else f"{failed} failed; its last lines:\n" + "\n".join(tail)
        )
    return [entries[nb.name] for nb in selected]


def _last_run_seconds(run_dir: Path) -> dict[str, float]:
    """Seconds per notebook of the previous run into ``run_dir`` (for the progress lines)."""
    try:
        previous = json.loads((run_dir / "run.json").read_text())
        return {nb["name"]: float(nb["seconds"]) for nb in previous["notebooks"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


# --- executing one notebook, with progress --------------------------------------------------------


@contextlib.contextmanager
def _filtered_stderr():
    """Pass this process's file descriptor 2 through a pipe that drops ``NOISE`` lines.

    The kernels papermill starts inherit it: TensorFlow's C++ start-up logging (which
    ``TF_CPP_MIN_LOG_LEVEL`` no longer silences in TensorFlow 2.21) and the kernel's own start-up
    warning arrive there, not through the notebook's streams.
    """
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump():
        with os.fdopen(read_end, "rb") as source, os.fdopen(os.dup(original), "wb") as target:
            for raw in source:
                if not NOISE.match(raw.decode("utf-8", errors="replace")):
                    target.write(raw)
                    target.flush()

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)  # the pump ends when the last writer (a kernel) has closed the pipe
        os.close(original)
        thread.join(timeout=5)


class _Lines(io.TextIOBase):
    """A text stream that prints each complete line with ``prefix``, dropping lines ``NOISE`` matches."""

    def __init__(self, prefix: str = "   | ", stream=None):
        super().__init__()
        self.prefix, self.stream, self._buffer = prefix, stream or sys.stdout, ""

    def writable(self):
        return True

    def write(self, text: str) -> int:
        self._buffer += text.replace("\r\n", "\n").replace("\r", "\n")
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            if line.strip() and not NOISE.match(line):
                print(f"{self.prefix}{line}", file=self.stream, flush=True)
        return len(text)

    def flush(self):
        if self._buffer:
            self.write("\n")


class _CellProgress(logging.Handler):
    """Turns papermill's ``Executing Cell N`` log records into ``cell k/n  <first line>``."""

    def __init__(self, cells: list[str | None], stream=None):
        super().__init__(logging.INFO)
        self.cells, self.stream = cells, stream or sys.stdout
        self.code_total = sum(c is not None for c in cells)

    def emit(self, record):
        match = re.match(r"Executing Cell (\d+)", record.getMessage())
        if not match:
            return  # the kernel's output arrives through the stream writers, not the log
        index = int(match.group(1)) - 1
        if 0 <= index < len(self.cells) and self.cells[index] is not None:
            number = sum(c is not None for c in self.cells[: index + 1])
            print(f"   cell {number}/{self.code_total}  {self.cells[index]}", file=self.stream, flush=True)


def cell_summaries(path: Path, parameters: dict) -> list[str | None]:
    """The first code line of each cell as papermill will run it (None for markdown cells).

    Papermill inserts its ``injected-parameters`` cell right after the ``parameters`` cell.
    """
    import nbformat

    summaries = []
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code":
            summaries.append(None)
            continue
        lines = [
            ln.strip() for ln in cell.source.splitlines() if ln.strip() and not ln.lstrip().startswith("#")
        ]
        first = lines[0] if lines else "(empty)"
        summaries.append(first if len(first) <= 90 else first[:87] + "...")
        if parameters and "parameters" in cell.metadata.get("tags", []):
            summaries.append(f"(injected parameters: {', '.join(parameters)})")
    return summaries


def execute(nb: Path, out: Path, parameters: dict, kernel_name: str) -> None:
    """Run ``nb`` into ``out`` with papermill, streaming cells and kernel output to the terminal.

    Papermill rewrites its output notebook after every cell; it writes to a hidden temporary file
    here, moved over ``out`` when the run ends (also when a cell failed, so the traceback is kept),
    so ``out`` is always a whole notebook.
    """
    import papermill

    partial = out.with_name(f".{out.stem}.partial.ipynb")
    log = logging.getLogger("papermill")
    handler = _CellProgress(cell_summaries(nb, parameters))
    saved = (log.level, log.propagate)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False  # papermill's own INFO lines and its copy of the kernel output stay out
    stdout, stderr = _Lines(), _Lines(prefix="   ! ")
    try:
        with _filtered_stderr():
            papermill.execute_notebook(
                str(nb),
                str(partial),
                parameters=parameters,
                cwd=str(nb.parent),
                kernel_name=kernel_name,
                progress_bar=False,
                log_output=True,
                stdout_file=stdout,
                stderr_file=stderr,
            )
    finally:
        stdout.flush()
        stderr.flush()
        log.removeHandler(handler)
        log.level, log.propagate = saved
        if partial.exists():
            os.replace(partial, out)


def render_html(executed: Path) -> Path:
    """``executed`` rendered to HTML beside it (``NN_x.html``), written atomically."""
    import nbconvert
    import nbformat

    body, _ = nbconvert.HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
    target = executed.with_suffix(".html")
    with config.atomic_path(target, suffix=".html") as tmp:
        tmp.write_text(body, encoding="utf-8")
    return target


# --- gallery ---------------------------------------------------------------------------------------


def _href(target: str | Path, start: Path) -> str:
    rel = os.path.relpath(Path(target).resolve(), start)
    return urllib.parse.quote(Path(rel).as_posix())


def write_gallery(record: dict, run_dir: Path) -> Path:
    """Write ``run_dir/index.html``: evaluation table, thumbnails by notebook, notebook links."""
    run_dir = Path(run_dir)
    parts = [
        *_gallery_header(record),
        *_evaluation_table_html(run_dir),
        *_notebook_links_html(record["notebooks"], run_dir),
    ]
    for nb in record["notebooks"]:
        parts.extend(_notebook_images_html(nb, run_dir))
    parts.append("</body></html>")
    out = run_dir / "index.html"
    with config.atomic_path(out, suffix=".html") as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    return out


_GALLERY_STYLE = (
    "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}"
    "figure{display:inline-block;margin:6px;width:220px;vertical-align:top}"
    "figure img{width:220px;height:160px;object-fit:contain;border:1px solid #ccc;background:#fff}"
    "figcaption{font-size:11px;word-break:break-all}"
    ".table{overflow-x:auto;max-width:100%}"
    "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 4px}"
    "th{white-space:normal;max-width:7em;word-break:break-word}"
    "</style></head><body>"
)


def _gallery_header(record: dict) -> list[str]:
    """The gallery's head, title, run summary and provenance."""
    return [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Run gallery: {html.escape(record['profile'])}</title>",
        _GALLERY_STYLE,
        f"<h1>Run gallery: profile <code>{html.escape(record['profile'])}</code></h1>",
        f"<p>{len(record['notebooks'])} notebooks in {record.get('seconds', 0):.0f} s. "
        f"Parameters: <code>{html.escape(json.dumps(record['parameters'], default=str))}</code></p>",
        *_provenance_html(record.get("provenance")),
    ]


def _evaluation_table_html(run_dir: Path) -> list[str]:
    """The "Model evaluation" section: a link to the evaluation CSV and its table, when there is one."""
    csv_path = Path(config.EVALUATION_CSV)
    parts = ["<h2>Model evaluation</h2>"]
    if not csv_path.exists():
        return [*parts, "<p>No evaluation table was written in this run.</p>"]
    import pandas as pd

    table = pd.read_csv(csv_path)
    parts.append(f"<p><a href='{_href(csv_path, run_dir)}'>{html.escape(csv_path.name)}</a></p>")
    parts.append(
        "<div class='table'>"
        + table.to_html(index=False, float_format=lambda v: f"{v:.4f}", border=0)
        + "</div>"
    )
    return parts


def _notebook_links_html(entries: list[dict], run_dir: Path) -> list[str]:
    """The "Notebooks" list: each notebook's section, time, image count and executed copies."""
    parts = ["<h2>Notebooks</h2><ul>"]
    for nb in entries:
        executed = Path(nb["executed"])
        rendered = (
            f"<a href='{_href(nb['html'], run_dir)}'>{html.escape(Path(nb['html']).name)}</a> "
            if nb.get("html")
            else ""
        )
        parts.append(
            f"<li><a href='#{html.escape(nb['name'])}'>{html.escape(nb['name'])}</a> "
            f"({nb['seconds']:.0f} s, {len(nb['images'])} images) — executed: {rendered}"
            f"(<a href='{_href(executed, run_dir)}'>{html.escape(executed.name)}</a>)</li>"
        )
    parts.append("</ul>")
    return parts


def _notebook_images_html(nb: dict, run_dir: Path) -> list[str]:
    """One notebook's section: its heading and a thumbnail per image it wrote."""
    parts = [f"<h2 id='{html.escape(nb['name'])}'>{html.escape(nb['name'])}</h2>"]
    if not nb["images"]:
        parts.append("<p>This notebook saved no image.</p>")
    for image in nb["images"]:
        href = _href(image, run_dir)
        label = html.escape(_display_name(Path(image)))
        parts.append(
            f"<figure><a href='{href}'><img src='{href}' loading='lazy' alt='{label}'></a>"
            f"<figcaption>{label}</figcaption></figure>"
        )
    return parts


def _provenance_html(made: dict | None) -> list[str]:
    """The gallery's "what made this run" line and its details (``run.json`` holds them all)."""
    if not made:
        return []
    packages = ", ".join(f"{name} {version}" for name, version in made["packages"].items() if version)
    host = made["machine"]
    return [
        f"<p>What made this run: <code>{html.escape(provenance.summary(made))}</code></p>",
        "<details><summary>Packages and machine</summary><ul>",
        f"<li>packages: {html.escape(packages)}</li>",
        f"<li>machine: {html.escape(json.dumps(host))}</li></ul></details>",
    ]


def _display_name(path: Path) -> str:
    for folder in output_folders():
        try:
            return f"{folder.name}/{path.resolve().relative_to(folder).as_posix()}"
        except ValueError:
            continue
    return path.name


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line on stderr, exit 2
        self.exit(2, f"error: {message} (see --help)\n")


def main(argv=None) -> int:
    """Entry point of ``python -m helpers.run``: 0 done, 1 a notebook failed, 2 a usage error."""
    try:
        args = _argument_parser().parse_args(argv)
        overrides = {**(args.overrides or {}), **parse_overrides(args.parameters)}
    except SystemExit as exc:  # --help (0) or a usage error (2, one line printed by _Parser.error)
        return int(exc.code or 0)
    except RunUsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run_dir = _prepare_outputs(args)
    try:
        run(
            args.profile,
            only=[s.strip() for s in args.only.split(",")] if args.only else None,
            run_dir=run_dir,
            kernel_name=args.kernel,
            overrides=overrides,
            notebooks_dir=args.notebooks_dir,
            jobs=JOBS.get(args.profile, 1) if args.jobs is None else args.jobs,
            part=args.part,
            position=tuple(int(n) for n in args.position.split("/")) if args.position else None,
        )
    except NotebookFailed as exc:
        print(f"RUN FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    except RunUsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _argument_parser() -> _Parser:
    """The command line of ``python -m helpers.run``."""
    parser = _Parser(description="Run the notebook suite headless with papermill.")
    parser.add_argument(
        "--profile",
        default="default",
        choices=profiles.PROFILES,
        help="settings of the run (notebooks/profiles.yaml)",
    )
    parser.add_argument("--only", help="comma-separated notebook numbers, e.g. 01,04")
    parser.add_argument(
        "-p",
        "--parameter",
        action="append",
        dest="parameters",
        metavar="NAME=VALUE",
        help="override a profile setting in every notebook that takes it; VALUE is YAML "
        "(-p epochs=3 -p models='[cnn_simple_v1]'); repeatable",
    )
    parser.add_argument(
        "--run-dir", help="where executed notebooks and the gallery go (default: runs/<profile>)"
    )
    parser.add_argument(
        "--output-root",
        help="write models_cache/, latent_space/, models_explain/, "
        "figures/ and the evaluation CSV under this folder",
    )
    parser.add_argument("--kernel", help="Jupyter kernel name (default: this interpreter)")
    parser.add_argument(
        "--jobs", type=int, help="notebooks run at once (default: the profile's: " + ", ".join(
            f"{p} {j}" for p, j in JOBS.items()) + ")"
    )  # fmt: skip
    # a notebook of a run with --jobs (_run_concurrently): where its record goes, its place in the run
    parser.add_argument("--part", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--position", help=argparse.SUPPRESS)
    parser.add_argument("--overrides", type=json.loads, help=argparse.SUPPRESS)
    parser.add_argument("--notebooks-dir", type=Path, help=argparse.SUPPRESS)
    return parser


def _prepare_outputs(args) -> Path:
    """Point this process's (and its kernels') outputs where ``args`` say, set the kernels' quiet
    environment where it is not set; return the run folder."""
    run_dir = Path(args.run_dir) if args.run_dir else config.RUNS / args.profile
    if args.output_root:
        set_output_root(args.output_root)
    else:
        set_profile_outputs(args.profile, run_dir)
    for key, value in KERNEL_ENV.items():
        os.environ.setdefault(key, value)
    return run_dir


if __name__ == "__main__":
    sys.exit(main())
