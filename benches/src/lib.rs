//! Shared code for rmox benchmarks.
