//! redb panics on pages it cannot parse: [`guarded`] turns such a panic into
//! [`StoreError::Damaged`], an error of the call, not a crash.

use std::path::Path;

use crate::broker::store::StoreError;

thread_local! {
    /// Set while this thread runs [`guarded`]: the panic hook keeps the message here instead
    /// of printing it, and the caller turns it into a [`StoreError::Damaged`].
    static GUARDED_PANIC: std::cell::RefCell<Option<Option<String>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f`, turning a panic inside it (redb panics on pages it cannot parse) into a
/// [`StoreError::Damaged`] naming `path`, without the panic being printed as a crash.
pub(super) fn guarded<T>(path: &Path, f: impl FnOnce() -> T) -> Result<T, StoreError> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let kept = GUARDED_PANIC.with(|slot| match &mut *slot.borrow_mut() {
                Some(message) => {
                    let payload = info.payload();
                    let what = payload
                        .downcast_ref::<&str>()
                        .copied()
                        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                        .unwrap_or("no message");
                    *message = Some(match info.location() {
                        Some(at) => {
                            // From the crate's name on: the registry's path says nothing.
                            let file = at.file();
                            let file = file.find("/redb-").map_or(file, |i| &file[i + 1..]);
                            format!("{what}; at {file}:{}", at.line())
                        }
                        None => what.to_owned(),
                    });
                    true
                }
                None => false,
            });
            if !kept {
                previous(info);
            }
        }));
    });
    // `Some(None)`: guarded, no panic yet. Whatever was there (a guarded caller further out)
    // is put back afterwards.
    let outer = GUARDED_PANIC.with(|slot| slot.borrow_mut().replace(None));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let message = GUARDED_PANIC.with(|slot| std::mem::replace(&mut *slot.borrow_mut(), outer));
    result.map_err(|payload| {
        let reason = message.flatten().unwrap_or_else(|| {
            payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_owned())
        });
        StoreError::Damaged {
            path: path.display().to_string(),
            reason: format!("redb could not read its own pages: {reason}"),
        }
    })
}
