"""Dev nDCG@10 of a trained cross-encoder interpolated with the first stage, for each first_stage_weight.

Training runs this sweep itself and writes it to personarag_training.json; this script redoes it
for a model directory (e.g. one trained before the sweep existed), on the same held-out dev queries.

    .venv/bin/python eval/ce_dev_sweep.py MODEL_DIR
"""

import json
import sys
from pathlib import Path

from sentence_transformers.cross_encoder import CrossEncoder

from personarag.training.common import read_run_file
from personarag.training.cross_encoder import CrossEncoderTrainConfig, dev_set
from personarag.training.cross_encoder_dev import first_stage_score, interpolation_sweep

model_dir = Path(sys.argv[1])
config = CrossEncoderTrainConfig(**read_run_file(model_dir)["config"])
dev = dev_set(config)
if dev is None:
    sys.exit(f"{model_dir}: the run had no dev set")
sweep = interpolation_sweep(CrossEncoder(str(model_dir), max_length=config.max_length), dev, config)
print(json.dumps({"first_stage": first_stage_score(dev), **sweep}, indent=1))
