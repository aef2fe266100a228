"""Training side of edgeasr: corpus building, model definition, losses, training loop."""
