//! The panic boundary: a panic must never unwind into the broker (undefined behaviour across
//! `extern "C"`) nor take it down, so every entry point and callback body runs inside [`guard`],
//! which turns a panic into the call's failing answer.

#![deny(unsafe_code)]

use std::ffi::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::log;
use crate::service::LogLevel;

/// Runs `f` behind a panic boundary; a panic yields `on_panic` (fail closed).
pub(crate) fn guard(on_panic: c_int, f: impl FnOnce() -> c_int) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(rc) => rc,
        Err(_) => {
            // Logging itself could be what panicked; keep this minimal.
            let _ = catch_unwind(|| {
                log(
                    LogLevel::Error,
                    "devid: internal error (panic) in a callback; failing closed",
                )
            });
            on_panic
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::host::{MOSQ_ERR_ACL_DENIED, MOSQ_ERR_AUTH, MOSQ_ERR_SUCCESS};
    use crate::ffi::log::tests::LOGS;

    #[test]
    fn panic_in_a_callback_fails_closed_and_is_logged() {
        let rc = guard(MOSQ_ERR_AUTH, || panic!("boom"));
        assert_eq!(rc, MOSQ_ERR_AUTH);
        let rc = guard(MOSQ_ERR_ACL_DENIED, || panic!("boom"));
        assert_eq!(rc, MOSQ_ERR_ACL_DENIED);
        assert_eq!(guard(MOSQ_ERR_AUTH, || MOSQ_ERR_SUCCESS), MOSQ_ERR_SUCCESS);
        LOGS.with(|l| {
            let l = l.borrow();
            assert_eq!(l.len(), 2);
            assert!(l[0].1.contains("failing closed"));
        });
    }
}
