"""The shapes world: a procedurally generated VQA world and a small LLaVA trained on it."""

from pathlib import Path

TOY_MODEL_NAME = "toy-llava"
TOY_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / TOY_MODEL_NAME

__all__ = ["TOY_MODEL_DIR", "TOY_MODEL_NAME"]
