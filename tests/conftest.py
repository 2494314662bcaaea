"""Test-suite settings: one intra-op thread (the tensors here are small, and oversubscribed
threads on a 2-core CI machine make them slower, not faster)."""
import torch

torch.set_num_threads(1)
