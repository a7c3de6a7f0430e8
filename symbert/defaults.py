"""The defaults of the commands and of the Python API: one source for both, so that they cannot drift.

A default of None is decided later: ``dtype`` the policy's, ``attention`` the model's in Hugging Face (sdpa,
eager for DeBERTa), ``gpu`` none named. The parallel layout's defaults are :class:`symbert.parallel.Layout`'s.
"""

#: The config read when none is named.
PRESET = "bert-base"
#: PyTorch on the GPU, where Hugging Face models train.
POLICY = "torch-cuda"
#: What Hugging Face's Trainer runs: torch's fused AdamW.
OPTIMIZER = "adamw-fused"
PRECISION = "fp32"
RECOMPUTE = "none"
#: The shape of report, explain, compare, diagram, latex, table, timeline and plot.
BATCH = 1
SEQ_LEN = 128

#: validate: a small batch of short sequences through a real model, in float32 on the CPU.
VALIDATE_BATCH = 2
VALIDATE_SEQ_LEN = 16
VALIDATE_DTYPE = "float32"
VALIDATE_DEVICE = "cpu"

#: sweep's grid (values as the command reads them: 8, 1,2,4, 1:64, 1:64:4).
SWEEP_BATCHES = "1:32"
SWEEP_SEQ_LENS = "128,256,512"

#: explore's starting batch, and the grid its reserved memory is precomputed at.
EXPLORE_BATCH = 8
EXPLORE_GRID_BATCH = "1,8"
EXPLORE_GRID_SEQ_LEN = "128,512"
