"""The tfscope command line: argument parsing and printing over core, export and profiling."""

__version__ = "0.1.0"
