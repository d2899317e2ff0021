"""``imwm-vta-reads`` (logic and documentation: imwm/cli/vta_read_placement.py), also without installing imwm."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from imwm.cli.vta_read_placement import *  # noqa: E402,F401,F403  (tests import this file: main, ...)
from imwm.cli.vta_read_placement import PROG, cli  # noqa: E402

if __name__ == "__main__":
    cli(PROG)
