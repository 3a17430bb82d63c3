"""lmms-eval tasks of the built-in shapes world."""
