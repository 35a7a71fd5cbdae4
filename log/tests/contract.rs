//! The log interface's conformance suite (`weir_log::contract`) against
//! the backends of this crate: `embedded::CHECK` and `memory::CHECK`.

use std::sync::Arc;

use tempfile::TempDir;
use weir_log::contract::Backend;
use weir_log::{EmbeddedLog, MemoryLog};

async fn embedded() -> Backend {
    let dir = TempDir::new().expect("a temporary directory");
    let log = log_core::Log::open(dir.path()).expect("the embedded log opens");
    Backend {
        log: Arc::new(EmbeddedLog::new(log)),
        keep: Box::new(dir),
    }
}

async fn memory() -> Backend {
    Backend {
        log: Arc::new(MemoryLog::new()),
        keep: Box::new(()),
    }
}

mod embedded {
    weir_log::contract_suite!(super::embedded);
}

mod memory {
    weir_log::contract_suite!(super::memory);
}

/// The catalog's checks against the data-directory catalog.
#[tokio::test]
async fn dir_catalog() {
    let dir = TempDir::new().expect("a temporary directory");
    weir_log::catalog::contract::check(&weir_log::DirCatalog::new(dir.path())).await;
}
