"""Test-suite settings.

- One intra-op thread: the tensors here are small, and oversubscribed threads on a 2-core CI
  machine make them slower, not faster.
- Without a GPU, Triton kernels run in Triton's interpreter on CPU tensors. The variable must
  be set before anything imports triton (torch._dynamo does), hence here.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

torch.set_num_threads(1)
