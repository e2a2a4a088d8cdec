"""Shared settings for the unit tests: one CPU thread (fast and repeatable on small tensors, and
kind to the other processes on a 2-core machine)."""
import torch

torch.set_num_threads(1)
