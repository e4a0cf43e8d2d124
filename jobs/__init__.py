"""fusionrec: the nightly e-commerce recommendation pipeline's importable jobs package."""
