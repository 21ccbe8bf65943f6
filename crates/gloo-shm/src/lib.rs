//! A shared-memory transport for ranks on one host (not yet built).
//!
//! What it will do: per-pair single-producer/single-consumer rings in a shared mapping created
//! exclusively with mode 0600, bounded spinning then a futex sleep, and single-copy
//! `process_vm_readv` for large messages where permitted. Unsafe code will live only in
//! `src/sys/`, each block with a `// SAFETY:` comment.
//!
//! Nothing here works yet: the crate waits for its own issue and exports nothing.
#![forbid(unsafe_code)]
