"""``python export/quantize_int8.py EXPORT --calibration DATA``: add INT8 files to an existing export.

The INT8 step lives in the package (:mod:`avss_sdk.export.quantize_int8`; ``avss-build-engines
--int8`` runs it right after an export); see ``python export/quantize_int8.py --help``.
"""

import sys

from avss_sdk.export.quantize_int8 import main

if __name__ == "__main__":
    sys.exit(main())
