"""The runtime: the export manifest, the text-embedding cache and the backends that run the stages.

Everything here is torch-free except the ``torch`` backend, which imports torch when it is made.
"""
