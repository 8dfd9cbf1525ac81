//! Drives rmox's sans-IO machines on glommio.
