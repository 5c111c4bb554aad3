"""tunebench: does fine-tuning a small open model beat prompting a big one on a narrow task?"""

__version__ = "0.1.0"
