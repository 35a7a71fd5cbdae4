//! What every Weir crate above the log shares, and nothing else:
//!
//! - [`names`]: the rules for tenant, pipeline and module names
//! - [`clock`]: the wall clock in milliseconds
//! - [`files`]: the server's own metadata files, replaced atomically and synced
//! - [`format`]: the versions of the formats Weir writes for itself, checked first

pub mod clock;
pub mod files;
pub mod format;
pub mod names;

pub use clock::now_ms;
