"""The Format seam (see ``base``) and the built-in formats."""
