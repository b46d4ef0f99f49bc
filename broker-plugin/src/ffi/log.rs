//! Lines to the broker's log (`mosquitto_log_printf`, broker thread only).

use crate::service::LogLevel;

#[cfg(not(test))]
use super::host::*;

/// Writes one line to the broker's log; a NUL in `msg` is written as `?`.
#[cfg(not(test))]
pub(crate) fn log(level: LogLevel, msg: &str) {
    let level = match level {
        LogLevel::Info => MOSQ_LOG_INFO,
        LogLevel::Notice => MOSQ_LOG_NOTICE,
        LogLevel::Warning => MOSQ_LOG_WARNING,
        LogLevel::Error => MOSQ_LOG_ERR,
    };
    let line = std::ffi::CString::new(msg.replace('\0', "?")).unwrap_or_default();
    // SAFETY: a "%s" format with one NUL-terminated string argument; broker thread only.
    unsafe { mosquitto_log_printf(level, c"%s".as_ptr(), line.as_ptr()) };
}

/// Unit tests run without a broker: lines go to a thread-local list instead.
#[cfg(test)]
pub(crate) fn log(level: LogLevel, msg: &str) {
    tests::LOGS.with(|l| l.borrow_mut().push((level, msg.to_string())));
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::RefCell;

    use crate::service::LogLevel;

    thread_local! {
        pub(crate) static LOGS: RefCell<Vec<(LogLevel, String)>> = const { RefCell::new(Vec::new()) };
    }
}
