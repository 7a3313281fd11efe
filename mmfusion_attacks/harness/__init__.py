"""The benchmark harness: grids of attacks streamed over data, transfer matrices, reports."""

from .grid import Cell, CellCounts, ComboCell, GridResult, GridSpec, Step, run_grid, run_transfer

__all__ = ["Cell", "CellCounts", "ComboCell", "GridResult", "GridSpec", "Step", "run_grid", "run_transfer"]
