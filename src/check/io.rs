//! I/O helpers.
