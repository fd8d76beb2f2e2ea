"""One module per model type's manager (a TypeManager subclass each)."""
