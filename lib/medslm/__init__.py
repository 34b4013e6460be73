"""medslm: a notebook-driven cookbook that turns a general small language model into a clinical one."""

__version__ = "0.1.0"
