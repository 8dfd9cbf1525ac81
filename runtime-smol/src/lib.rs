//! Drives rmox's sans-IO machines on smol.
