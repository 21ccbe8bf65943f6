//! The sans-io wire protocol.
