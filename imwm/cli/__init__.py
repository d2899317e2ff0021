"""Command-line entry points (``[project.scripts]`` in pyproject.toml); ``scripts/*.py`` call the same.

=====================  ==================================  ========================================
command                module                              the same as
=====================  ==================================  ========================================
``imwm-train``         :mod:`imwm.cli.train`               ``python scripts/train.py``
``imwm-train-vta``     :mod:`imwm.cli.train_vta`           ``python scripts/train_vta.py``
``imwm-eval``          :mod:`imwm.cli.evaluate`            ``python scripts/evaluate.py``
``imwm-plot``          :mod:`imwm.cli.plot`                ``python scripts/plot.py``
``imwm-vta-viz``       :mod:`imwm.cli.vta_boundary_viz`    ``python scripts/vta_boundary_viz.py``
``imwm-vta-eval``      :mod:`imwm.cli.vta_boundary_eval`   ``python scripts/vta_boundary_eval.py``
``imwm-vta-detector``  :mod:`imwm.cli.vta_detector_only`   ``python scripts/vta_detector_only.py``
``imwm-vta-reads``     :mod:`imwm.cli.vta_read_placement`  ``python scripts/vta_read_placement.py``
=====================  ==================================  ========================================

Each module has ``cli()``, what the console script calls (exit status 0, or 2 with one line
``imwm: error: ...`` for a user error). The argparse commands also have ``main(argv)``, which
returns the result (a dict) and raises user errors instead of exiting. The Hydra commands read
their configs from the package (``pkg://imwm.configs``, :mod:`imwm.configs`), so they run from
any working directory; relative paths (``runs/...``) are relative to the working directory.
"""


def save_json(result: dict, path: str | None) -> None:
    """Write ``result`` to ``path`` (indented JSON) and say so; nothing without a path."""
    if path:
        import json

        with open(path, "w") as fh:
            json.dump(result, fh, indent=2)
        print(f"wrote {path}")
