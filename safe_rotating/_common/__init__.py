"""Small jobs every part of the package shares: OS files and their errors, fork safety,
argument checks, exit hooks, argparse types."""
