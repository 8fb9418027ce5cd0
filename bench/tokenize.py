"""Entry point of the tokenization benchmark: ``python bench/tokenize.py [--repeats 3]``.

The benchmark itself is ``_tokenize_bench.py``. This file's name shadows the standard library's
``tokenize`` for every script run from ``bench/`` (the script's folder is first on ``sys.path``,
and ``linecache``/``inspect`` import ``tokenize``), so when imported under that name it loads
the standard module in its place.
"""

import sys

if __name__ == "__main__":
    from _tokenize_bench import main

    main()
else:
    from importlib.machinery import PathFinder
    from importlib.util import module_from_spec
    from pathlib import Path

    _here = Path(__file__).resolve().parent
    _path = [p for p in sys.path if Path(p or ".").resolve() != _here]
    _spec = PathFinder.find_spec(__name__, _path)
    if _spec is None or _spec.loader is None:
        raise ImportError(f"cannot find the standard library module {__name__!r}")
    _module = module_from_spec(_spec)
    sys.modules[__name__] = _module  # the import statement returns this module
    _spec.loader.exec_module(_module)
