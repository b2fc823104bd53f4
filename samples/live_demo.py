"""The live demo from a source checkout: the same program as the installed ``avss-demo`` command.

    python samples/live_demo.py --vocab "dog, guitar, person speaking"
    python samples/live_demo.py --headless --out segmented.mp4

Its code is avss_sdk/demo.py; ``python samples/live_demo.py --help`` lists the options.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's avss_sdk, installed or not

from avss_sdk.demo import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
