"""Training: the models, the trainer loop, torchrun's process group and progress lines."""
