"""The live demo from a source checkout: the same program as the installed ``avss-demo`` command.

    python samples/live_demo.py --vocab "dog, guitar, person speaking"
    python samples/live_demo.py --headless --out segmented.mp4

Its code is avss_sdk/demo.py; ``python samples/live_demo.py --help`` lists the options.
"""

import sys

from avss_sdk.demo import main

if __name__ == "__main__":
    sys.exit(main())
