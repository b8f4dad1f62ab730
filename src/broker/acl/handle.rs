//! The ACL in force, replaced whole when the file is reloaded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use super::Acl;

/// The ACL in force: none without `[auth] acl_file` (everything allowed), replaced whole on
/// reload.
#[derive(Debug, Default)]
pub struct AclHandle {
    /// A leaf lock, held only to clone the `Arc` out.
    current: RwLock<Option<Arc<Acl>>>,
    /// Bumped at every replacement, so connections drop the decisions they cached.
    generation: AtomicU64,
}

impl AclHandle {
    pub fn new(acl: Option<Acl>) -> AclHandle {
        AclHandle {
            current: RwLock::new(acl.map(Arc::new)),
            generation: AtomicU64::new(0),
        }
    }

    pub fn current(&self) -> Option<Arc<Acl>> {
        self.current.read().clone()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The ACL in force with the generation it belongs to, or an older generation: the
    /// generation is read first, so a reload in between shows as a newer one later.
    pub fn snapshot(&self) -> (u64, Option<Arc<Acl>>) {
        let generation = self.generation();
        (generation, self.current())
    }

    pub fn replace(&self, acl: Option<Acl>) {
        *self.current.write() = acl.map(Arc::new);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}
