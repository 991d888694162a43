"""nodeflow's entry point: `python main.py` opens the editor, `python main.py run WORKFLOW` runs headless.

Same commands as the `nodeflow` console script (see `python main.py --help`).
"""

import sys

from nodeflow.cli import main

if __name__ == "__main__":
    sys.exit(main())
