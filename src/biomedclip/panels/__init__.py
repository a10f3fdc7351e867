"""Panels: compound figures split into panel–subcaption pairs (detection, label reading, subcaption splitting,
alignment). A pure interface (image + caption -> ``FigurePanels``), used by the corpus workers and the ``panels``
CLI group."""

from biomedclip.panels.types import Box, FigurePanels, Panel

__all__ = ["Box", "FigurePanels", "Panel"]
