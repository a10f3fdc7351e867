"""The glyph classifier that reads panel letters: its classes, a NumPy forward pass over shipped weights, and
(beside it) the data generator and training script that produce those weights from scratch."""

from biomedclip.panels.label_model.net import CLASSES, OTHER, GlyphClassifier, load_classifier

__all__ = ["CLASSES", "OTHER", "GlyphClassifier", "load_classifier"]
