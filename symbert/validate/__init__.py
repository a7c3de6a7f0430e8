"""Measurements on real PyTorch / Hugging Face models, used to validate the symbolic analyses."""
