"""prunebench: vision-token pruning methods for VLMs behind one hook interface."""
__version__ = "0.1.0"
