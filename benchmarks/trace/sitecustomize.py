"""Every Python process a benchmark starts imports this first (its folder leads PYTHONPATH), and
at its exit writes the files it imported and the YAML files it opened to
$FASHION_LAB_TRACE/<pid>.txt: the code a result measured, found rather than declared."""

import atexit
import os
import sys

_opened: set[str] = set()
_started = False


def _audit(event: str, args: tuple) -> None:
    if event == "open" and isinstance(args[0], str) and args[0].endswith((".yaml", ".yml")):
        _opened.add(os.path.abspath(args[0]))


def files() -> set[str]:
    """The absolute paths of this process's imported modules and opened YAML files so far."""
    imported = {getattr(m, "__file__", None) for m in list(sys.modules.values())}
    return {os.path.abspath(f) for f in imported if isinstance(f, str)} | _opened


def _write(folder: str) -> None:
    with open(os.path.join(folder, f"{os.getpid()}.txt"), "w") as f:
        f.write("\n".join(sorted(files())))


def start(folder: str | None) -> None:
    """Note the YAML files this process opens from now on; with a folder, write all it found
    there at exit."""
    global _started
    if not _started:
        sys.addaudithook(_audit)
        _started = True
    if folder:
        atexit.register(_write, folder)


if os.environ.get("FASHION_LAB_TRACE"):
    start(os.environ["FASHION_LAB_TRACE"])

if __name__ == "sitecustomize":  # run the sitecustomize this one shadows, if there is one
    import importlib.machinery
    import importlib.util

    _here = os.path.dirname(os.path.abspath(__file__))
    _path = [p for p in sys.path if os.path.abspath(p or ".") != _here]
    if (_spec := importlib.machinery.PathFinder.find_spec("sitecustomize", _path)) and _spec.loader:
        _spec.loader.exec_module(importlib.util.module_from_spec(_spec))
