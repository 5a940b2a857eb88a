"""mixflow-bench: reproduce flow-matching image generators and MixFlow post-training, with ADM-exact metrics."""

__version__ = "0.1.0"
