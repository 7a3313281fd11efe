"""The benchmark harness: grids of attacks streamed over data, transfer matrices, reports."""

from .grid import Cell, GridResult, GridSpec, run_grid, run_transfer

__all__ = ["Cell", "GridResult", "GridSpec", "run_grid", "run_transfer"]
