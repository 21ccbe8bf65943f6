//! The in-process transport: threads as ranks.
