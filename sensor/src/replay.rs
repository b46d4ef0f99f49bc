//! The broker's replay window and the sensor's counter.

use crate::Error;

/// Width of the window below the highest accepted seq.
pub const WINDOW: u64 = 64;

/// The highest accepted seq of one sensor and which of the 64 below it were accepted.
///
/// A seq is acceptable when it is above the highest, or at most 64 below it and not yet
/// accepted. [`ReplayWindow::check`] decides without changing anything; call
/// [`ReplayWindow::accept`] once the message has verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayWindow {
    highest: u64,
    /// Bit `i` set: `highest - 1 - i` was accepted (or lies at or below the floor).
    below: u64,
}

impl ReplayWindow {
    /// A window where every seq up to `floor` counts as accepted (0: nothing yet). A broker
    /// starts a sensor's window at its persisted highest, or at the service's `seq_floor`.
    pub const fn new(floor: u64) -> Self {
        ReplayWindow {
            highest: floor,
            below: u64::MAX,
        }
    }

    /// A window as saved: `highest` and the bitmap of the 64 below it
    /// ([`ReplayWindow::below`]).
    pub const fn from_parts(highest: u64, below: u64) -> Self {
        ReplayWindow { highest, below }
    }

    /// The highest accepted seq (or the floor).
    pub const fn highest(&self) -> u64 {
        self.highest
    }

    /// Bit `i` set: seq `highest - 1 - i` was accepted.
    pub const fn below(&self) -> u64 {
        self.below
    }

    /// Whether `seq` may be accepted: [`Error::BadSeq`] for 0, [`Error::Replayed`] for one
    /// already accepted, [`Error::TooOld`] for one more than 64 below the highest.
    pub const fn check(&self, seq: u64) -> Result<(), Error> {
        if seq == 0 {
            return Err(Error::BadSeq);
        }
        if seq > self.highest {
            return Ok(());
        }
        let d = self.highest - seq;
        if d == 0 {
            return Err(Error::Replayed);
        }
        if d > WINDOW {
            return Err(Error::TooOld);
        }
        if self.below & (1u64 << (d - 1)) != 0 {
            Err(Error::Replayed)
        } else {
            Ok(())
        }
    }

    /// Records `seq` as accepted (after [`ReplayWindow::check`] and verification). A seq the
    /// window cannot hold (0, or more than 64 below) changes nothing.
    pub fn accept(&mut self, seq: u64) {
        if seq == 0 {
            return;
        }
        if seq > self.highest {
            let shift = seq - self.highest;
            // The old highest becomes bit shift - 1; whatever moves past bit 63 is forgotten.
            self.below = match shift {
                WINDOW => 1 << (WINDOW - 1),
                s if s > WINDOW => 0,
                s => (self.below << s) | (1 << (s - 1)),
            };
            self.highest = seq;
        } else {
            let d = self.highest - seq;
            if (1..=WINDOW).contains(&d) {
                self.below |= 1u64 << (d - 1);
            }
        }
    }
}

/// The sensor's message counter: every seq is used at most once, across restarts.
///
/// The rule: a seq may be used only once a value at least as high is persisted. The sensor
/// persists a limit a block ahead (one flash write per `block` readings), and after a restart
/// resumes from the persisted limit, skipping the unused rest of the block.
///
/// Laid out as three `u64` (`repr(C)`) so that C firmware can keep one in static storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Counter {
    last_used: u64,
    persisted: u64,
    block: u64,
}

impl Counter {
    /// The counter after a (re)start, from the persisted value (0 when none was ever
    /// persisted); `block` (at least 1) is how far ahead each persisted limit reaches.
    pub const fn resume(persisted: u64, block: u64) -> Self {
        Counter {
            last_used: persisted,
            persisted,
            block: if block == 0 { 1 } else { block },
        }
    }

    /// The value to persist before the next seq may be used, or `None` while one is free.
    /// Persist it, then call [`Counter::persisted`].
    pub const fn to_persist(&self) -> Option<u64> {
        if self.last_used < self.persisted || self.last_used == u64::MAX {
            None
        } else {
            Some(self.last_used.saturating_add(self.block))
        }
    }

    /// Tells the counter that `value` is now durably stored. A value below the present limit
    /// changes nothing.
    pub fn persisted(&mut self, value: u64) {
        if value > self.persisted {
            self.persisted = value;
        }
    }

    /// The next seq: [`Error::PersistFirst`] when it is not yet covered by a persisted limit,
    /// [`Error::CounterExhausted`] after 2^64 - 1.
    pub fn next_seq(&mut self) -> Result<u64, Error> {
        if self.last_used == u64::MAX {
            return Err(Error::CounterExhausted);
        }
        if self.last_used >= self.persisted {
            return Err(Error::PersistFirst);
        }
        self.last_used += 1;
        Ok(self.last_used)
    }

    /// The last seq handed out.
    pub const fn last_used(&self) -> u64 {
        self.last_used
    }
}
