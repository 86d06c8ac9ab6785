"""Model classes a family declares that transformers does not ship (PLLaVA's)."""
