"""Suite-wide settings.

Tests use tiny tensors, where one intra-op thread is fastest and does not oversubscribe the 2-core CI machine
(tests that train longer set their own thread count).
"""

import torch

torch.set_num_threads(1)
