"""Built-in pruning methods; each module registers one method."""
