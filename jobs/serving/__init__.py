"""The registry gate (register_and_gate), the night's outputs (batch_recommend), the served
pyfunc model and the loader of a night's trained models."""
