import torch

# Tiny models lose more to thread hand-offs than they gain; CI has 2 cores.
torch.set_num_threads(1)
