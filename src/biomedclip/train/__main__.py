"""``python -m biomedclip.train`` / ``torchrun ... -m biomedclip.train --config FILE.yaml [--key value ...]``."""

from biomedclip.train.cli import train

train(prog_name="biomedclip.train")
