"""avss_sdk: open-vocabulary audio-visual semantic segmentation at the edge.

The runtime part of this package (everything outside ``avss_sdk.modeling``) needs no torch.
"""

__version__ = "0.1.0"
