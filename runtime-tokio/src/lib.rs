//! Drives rmox's sans-IO machines on tokio.
