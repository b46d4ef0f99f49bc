//! Waiting for a condition instead of sleeping a fixed time.

use std::time::{Duration, Instant};

/// Polls the async `check` every 100 ms until it holds; panics naming `what` if it has not within
/// `within`. For conditions that come true after a timer of the code under test (a grace period,
/// a staleness limit, an expiry): the test waits as long as the condition takes, not a fixed
/// sleep sized to the timer.
pub async fn wait_until<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `f` until it returns true or `timeout` passes.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}
