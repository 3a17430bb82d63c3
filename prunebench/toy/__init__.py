"""The shapes world: a procedurally generated VQA world and a small LLaVA trained on it."""
