"""``imwm-vta-detector`` (logic and documentation: imwm/cli/vta_detector_only.py), also without installing imwm."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from imwm.cli.vta_detector_only import PROG, cli, main  # noqa: E402,F401  (tests import main)

if __name__ == "__main__":
    cli(PROG)
