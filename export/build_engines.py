"""``python export/build_engines.py ...``: the ``avss-build-engines`` command from a source checkout.

The export lives in the package (:mod:`avss_sdk.export`), so a pip-installed SDK has the command
without this folder; see ``avss-build-engines --help``.
"""

import sys

from avss_sdk.export.build_engines import main

if __name__ == "__main__":
    sys.exit(main())
