//! The renewal decisions, sans-IO: time and randomness come in as arguments, a decision goes
//! out. The driver (`renew::agent`) does the I/O the decision names.
//!
//! - When: an LDevID is renewed at 2/3 of its lifetime plus a jitter drawn uniformly from
//!   [0, lifetime/6), i.e. somewhere in [2/3, 5/6) of its lifetime ([`renew_at`]). LDevIDs issued
//!   in the same second (a fleet switched on together) therefore renew spread evenly over a sixth
//!   of their lifetime (15 days for the default 90-day LDevID), and the last sixth stays for
//!   retries while the server is unreachable.
//! - The first enrollment: at the device's first start + a delay drawn uniformly from
//!   [0, `enroll_jitter`) ([`enroll_at`]), drawn once and kept across restarts. Devices switched
//!   on together (a delivery powered up at once, a site after a power cut before any of them
//!   had an LDevID) therefore enroll spread evenly over the window rather than in the same
//!   second: N devices ask for about N / `enroll_jitter` enrollments per second (10,000 devices
//!   and the default 60 s: ~167/s, within what one devid-server on two cores issues). Size the
//!   window to the fleet switched on together divided by the rate the servers can issue at; a
//!   device that needs its LDevID before it may connect waits at most that long once, at birth.
//!   Fallbacks to the IDevID after an LDevID was refused or expired are retries and follow the
//!   backoff instead.
//! - With what: no LDevID -> enroll one with the IDevID (`simpleenroll`); a valid LDevID ->
//!   re-enroll with it (`simplereenroll`); an LDevID expired less than `renewal_grace` ago and not
//!   yet refused -> re-enroll with the expired LDevID; else fall back to the IDevID.
//! - After a failure: exponential backoff with jitter ([`backoff`]): the nth retry waits
//!   uniformly in [d/2, d) with d = min(retry_max, retry_min * 2^n), so a fleet cut off together
//!   does not come back together.

use std::time::Duration;

/// The validity of a certificate, in seconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: u64,
    pub not_after: u64,
}

impl Validity {
    /// Seconds of lifetime (zero for a certificate whose notAfter is not after its notBefore).
    pub fn lifetime(&self) -> u64 {
        self.not_after.saturating_sub(self.not_before)
    }
}

/// A uniform draw from [0, 1), made by the caller's random source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Unit(f64);

impl Unit {
    /// From 64 random bits (53 of them used: every value is exact in an f64).
    pub fn from_bits(bits: u64) -> Unit {
        Unit((bits >> 11) as f64 / (1u64 << 53) as f64)
    }
    /// A fixed value, clamped into [0, 1) (tests and simulations).
    pub fn new(u: f64) -> Unit {
        Unit(u.clamp(0.0, 1.0 - f64::EPSILON))
    }
    pub fn get(self) -> f64 {
        self.0
    }
}

/// The renewal point: `not_before + lifetime * 2/3 + u * lifetime/6`, never after `not_after`.
/// A certificate without lifetime is due at once.
pub fn renew_at(v: Validity, u: Unit) -> u64 {
    let life = v.lifetime();
    if life == 0 {
        return v.not_before.min(v.not_after);
    }
    let base = life as u128 * 2 / 3;
    let window = life as f64 / 6.0;
    let jitter = (u.get() * window) as u128;
    (v.not_before as u128 + base + jitter).min(v.not_after as u128) as u64
}

/// The agent's settings the decisions depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// How long after expiry the server still accepts the LDevID for a re-enroll (the model's
    /// `renewal_grace`; zero = never).
    pub renewal_grace: Duration,
    /// First retry delay after a failure.
    pub retry_min: Duration,
    /// The longest retry delay.
    pub retry_max: Duration,
    /// The first enrollment waits a delay drawn uniformly from [0, this) ([`enroll_at`]).
    pub enroll_jitter: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            renewal_grace: Duration::from_secs(30 * 86_400),
            retry_min: Duration::from_secs(30),
            retry_max: Duration::from_secs(3_600),
            enroll_jitter: DEFAULT_ENROLL_JITTER,
        }
    }
}

/// The default window the first enrollment is spread over.
pub const DEFAULT_ENROLL_JITTER: Duration = Duration::from_secs(60);

/// When a device first started at `first_start` (Unix seconds) enrolls:
/// `first_start + u * enroll_jitter`, whole seconds (a zero window: at once).
pub fn enroll_at(first_start: u64, enroll_jitter: Duration, u: Unit) -> u64 {
    let delay = (u.get() * enroll_jitter.as_secs_f64()) as u64;
    first_start.saturating_add(delay)
}

/// The delay before retry number `attempt` (1 = the first retry): uniform in [d/2, d) with
/// d = min(retry_max, retry_min * 2^(attempt-1)).
pub fn backoff(policy: &Policy, attempt: u32, u: Unit) -> Duration {
    let min = policy.retry_min.as_secs_f64();
    let max = policy.retry_max.as_secs_f64().max(min);
    let d = (min * 2f64.powi(attempt.saturating_sub(1).min(62) as i32)).min(max);
    Duration::from_secs_f64(d / 2.0 + u.get() * d / 2.0)
}

/// Which certificate authenticates a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// The birth certificate (never renewed, never expires in practice).
    Idevid,
    /// The current LDevID (possibly expired, within the grace).
    Ldevid,
}

/// What the server is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// EST simpleenroll: a first LDevID, on the strength of the IDevID.
    Enroll,
    /// EST simplereenroll: a new LDevID on the strength of the current one.
    Reenroll,
}

/// Failures so far in the current renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Retry {
    /// Failed attempts in a row.
    pub attempts: u32,
    /// Not before this (Unix seconds).
    pub next_try: u64,
    /// The server refused the current LDevID (expired past the grace, or revoked): the next
    /// attempt uses the IDevID.
    pub ldevid_refused: bool,
}

/// What the decision is based on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inputs {
    /// Unix seconds.
    pub now: u64,
    /// The current LDevID's validity, if the device has one.
    pub ldevid: Option<Validity>,
    /// When the current LDevID is due (fixed once per certificate, see [`renew_at`]).
    pub due: Option<u64>,
    /// When the first enrollment is due (drawn once per device, see [`enroll_at`]); None: at
    /// once.
    pub enroll_at: Option<u64>,
    pub retry: Retry,
}

/// What to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing until this time (Unix seconds).
    Wait { until: u64 },
    /// Ask the server now.
    Renew { with: Credential, call: Call },
}

/// The one decision: when, and with which certificate.
pub fn decide(policy: &Policy, i: &Inputs) -> Decision {
    let Some(ldevid) = i.ldevid else {
        let first = i.retry.next_try.max(i.enroll_at.unwrap_or(0));
        return not_before(first, i.now, Credential::Idevid, Call::Enroll);
    };
    let due = i.due.unwrap_or(ldevid.not_before);
    if i.now < due {
        return Decision::Wait { until: due };
    }
    let grace_end = ldevid
        .not_after
        .saturating_add(policy.renewal_grace.as_secs());
    let usable = i.now < ldevid.not_after || (i.now < grace_end && policy.renewal_grace > ZERO);
    if usable && !i.retry.ldevid_refused {
        not_before(i.retry.next_try, i.now, Credential::Ldevid, Call::Reenroll)
    } else {
        not_before(i.retry.next_try, i.now, Credential::Idevid, Call::Enroll)
    }
}

const ZERO: Duration = Duration::ZERO;

fn not_before(next_try: u64, now: u64, with: Credential, call: Call) -> Decision {
    if now < next_try {
        Decision::Wait { until: next_try }
    } else {
        Decision::Renew { with, call }
    }
}

/// How an attempt ended, as far as the schedule cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new LDevID was installed: the retry state is cleared.
    Issued,
    /// No answer, or the server is overloaded or failing (network error, 5xx): back off.
    Unreachable,
    /// The server answered "later" (EST 202 or 503 with Retry-After, in seconds).
    RetryAfter(u64),
    /// The server refused the request with the given credential (4xx).
    Refused(Credential),
}

/// The retry state after an attempt made at `now`.
pub fn after(policy: &Policy, retry: Retry, now: u64, outcome: Outcome, u: Unit) -> Retry {
    let attempts = retry.attempts.saturating_add(1);
    let wait = backoff(policy, attempts, u).as_secs().max(1);
    match outcome {
        Outcome::Issued => Retry::default(),
        Outcome::Unreachable => Retry {
            attempts,
            next_try: now.saturating_add(wait),
            ldevid_refused: retry.ldevid_refused,
        },
        Outcome::RetryAfter(s) => Retry {
            attempts,
            next_try: now.saturating_add(s.max(1)),
            ldevid_refused: retry.ldevid_refused,
        },
        // A refused LDevID: the IDevID is tried at once (no wait: it is another request).
        Outcome::Refused(Credential::Ldevid) => Retry {
            attempts,
            next_try: now,
            ldevid_refused: true,
        },
        // A refused IDevID (device revoked or suspended): keep asking, slowly.
        Outcome::Refused(Credential::Idevid) => Retry {
            attempts,
            next_try: now.saturating_add(wait),
            ldevid_refused: retry.ldevid_refused,
        },
    }
}

/// Which certificate to connect to the broker with: the LDevID while it is valid, else the
/// IDevID (which a model with `connect_with = ldevid` refuses: the device then enrolls first).
pub fn connect_with(now: u64, ldevid: Option<Validity>) -> Credential {
    match ldevid {
        Some(v) if now < v.not_after => Credential::Ldevid,
        _ => Credential::Idevid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    fn policy() -> Policy {
        Policy {
            renewal_grace: Duration::from_secs(30 * DAY),
            retry_min: Duration::from_secs(30),
            retry_max: Duration::from_secs(3_600),
            enroll_jitter: Duration::from_secs(60),
        }
    }

    fn v(not_before: u64, days: u64) -> Validity {
        Validity {
            not_before,
            not_after: not_before + days * DAY,
        }
    }

    #[test]
    fn renew_at_is_two_thirds_plus_up_to_a_sixth_of_the_lifetime() {
        let c = v(1_000, 90);
        assert_eq!(renew_at(c, Unit::new(0.0)), 1_000 + 60 * DAY);
        assert_eq!(renew_at(c, Unit::new(0.5)), 1_000 + 60 * DAY + 15 * DAY / 2);
        let last = renew_at(c, Unit::new(1.0));
        assert!(
            (1_000 + 75 * DAY - 1..1_000 + 75 * DAY).contains(&last),
            "{last}"
        );
        // Short certificates keep the same proportions.
        assert_eq!(renew_at(v(0, 0), Unit::new(0.3)), 0);
        let short = Validity {
            not_before: 100,
            not_after: 160,
        };
        assert_eq!(renew_at(short, Unit::new(0.0)), 140);
        assert_eq!(renew_at(short, Unit::new(0.5)), 145);
        // A certificate whose notAfter precedes its notBefore is due at once.
        let bad = Validity {
            not_before: 500,
            not_after: 400,
        };
        assert_eq!(renew_at(bad, Unit::new(0.9)), 400);
    }

    #[test]
    fn enroll_at_spreads_a_fleet_switched_on_in_one_second_over_the_window() {
        const FLEET: usize = 10_000;
        let window = Duration::from_secs(60);
        assert_eq!(enroll_at(1_000, window, Unit::new(0.0)), 1_000);
        assert_eq!(enroll_at(1_000, window, Unit::new(0.5)), 1_030);
        assert_eq!(enroll_at(1_000, window, Unit::new(1.0)), 1_059);
        assert_eq!(enroll_at(1_000, Duration::ZERO, Unit::new(0.7)), 1_000);
        // SplitMix64: reproducible draws standing in for the agents' OS randomness.
        let mut state = 0x5eed_u64;
        let mut draw = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            Unit::from_bits(z ^ (z >> 31))
        };
        let mut per_second = std::collections::BTreeMap::<u64, usize>::new();
        for _ in 0..FLEET {
            *per_second
                .entry(enroll_at(1_000, window, draw()))
                .or_default() += 1;
        }
        let busiest = per_second.values().copied().max().unwrap_or(0);
        assert_eq!(per_second.len(), 60, "every second of the window is used");
        assert!(per_second.keys().all(|t| (1_000..1_060).contains(t)));
        // Mean 10,000 / 60 = 167 per second; without the jitter all 10,000 share one second.
        assert!(busiest <= 230, "busiest second: {busiest}");
        let mut unjittered = std::collections::BTreeSet::new();
        for _ in 0..FLEET {
            unjittered.insert(enroll_at(1_000, Duration::ZERO, draw()));
        }
        assert_eq!(unjittered.len(), 1);
    }

    #[test]
    fn unit_from_bits_covers_zero_to_one() {
        assert_eq!(Unit::from_bits(0).get(), 0.0);
        let top = Unit::from_bits(u64::MAX).get();
        assert!(top < 1.0 && top > 0.999_999, "{top}");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_never_below_half() {
        let p = policy();
        let cases = [
            // (attempt, u, expected seconds)
            (1, 0.0, 15.0),
            (1, 0.999_999, 30.0),
            (2, 0.0, 30.0),
            (3, 0.5, 90.0),
            (8, 0.0, 1_800.0), // 30 * 2^7 = 3840 > 3600: capped
            (40, 0.0, 1_800.0),
            (u32::MAX, 0.0, 1_800.0),
        ];
        for (attempt, u, want) in cases {
            let got = backoff(&p, attempt, Unit::new(u)).as_secs_f64();
            assert!((got - want).abs() < 0.01, "attempt {attempt} u {u}: {got}");
        }
    }

    #[test]
    fn decisions_table() {
        let p = policy();
        let l = v(0, 90);
        let due = 65 * DAY;
        let r0 = Retry::default();
        let refused = Retry {
            attempts: 1,
            next_try: 0,
            ldevid_refused: true,
        };
        let backing_off = Retry {
            attempts: 2,
            next_try: 70 * DAY,
            ldevid_refused: false,
        };
        use Call::*;
        use Credential::*;
        let cases: &[(&str, Inputs, Decision)] = &[
            (
                "ok/no LDevID: enroll with the IDevID at once",
                Inputs {
                    now: 5,
                    ldevid: None,
                    due: None,
                    enroll_at: None,
                    retry: r0,
                },
                Decision::Renew {
                    with: Idevid,
                    call: Enroll,
                },
            ),
            (
                "ok/no LDevID, backing off: wait",
                Inputs {
                    now: 5,
                    ldevid: None,
                    due: None,
                    enroll_at: None,
                    retry: Retry {
                        attempts: 1,
                        next_try: 50,
                        ldevid_refused: false,
                    },
                },
                Decision::Wait { until: 50 },
            ),
            (
                "ok/fresh LDevID: wait until due",
                Inputs {
                    now: DAY,
                    ldevid: Some(l),
                    due: Some(due),
                    enroll_at: None,
                    retry: r0,
                },
                Decision::Wait { until: due },
            ),
            (
                "ok/due: re-enroll with the LDevID",
                Inputs {
                    now: due,
                    ldevid: Some(l),
                    due: Some(due),
                    enroll_at: None,
                    retry: r0,
                },
                Decision::Renew {
                    with: Ldevid,
                    call: Reenroll,
                },
            ),
            (
                "ok/due but backing off: wait for the retry",
                Inputs {
                    now: due + 1,
                    ldevid: Some(l),
                    due: Some(due),
                    enroll_at: None,
                    retry: backing_off,
                },
                Decision::Wait { until: 70 * DAY },
            ),
            (
                "ok/expired within the grace: re-enroll with the expired LDevID",
                Inputs {
                    now: 100 * DAY,
                    ldevid: Some(l),
                    due: Some(due),
                    enroll_at: None,
                    retry: r0,
                },
                Decision::Renew {
                    with: Ldevid,
                    call: Reenroll,
                },
            ),
            (
                "ok/expired past the grace: fall back to the IDevID",
                Inputs {
                    now: 120 * DAY,
                    ldevid: Some(l),
                    due: Some(due),
                    enroll_at: None,
                    retry: r0,
                },
                Decision::Renew {
                    with: Idevid,
                    call: Enroll,
                },
            ),
            (
                "ok/expired within the grace but refused: the IDevID",
                Inputs {
                    now: 100 * DAY,
                    ldevid: Some(l),
                    due: Some(due),
                    enroll_at: None,
                    retry: refused,
                },
                Decision::Renew {
                    with: Idevid,
                    call: Enroll,
                },
            ),
            (
                "ok/valid but refused (revoked LDevID): the IDevID",
                Inputs {
                    now: due,
                    ldevid: Some(l),
                    due: Some(due),
                    enroll_at: None,
                    retry: refused,
                },
                Decision::Renew {
                    with: Idevid,
                    call: Enroll,
                },
            ),
            (
                "ok/no due time known: due from notBefore",
                Inputs {
                    now: 1,
                    ldevid: Some(l),
                    due: None,
                    enroll_at: None,
                    retry: r0,
                },
                Decision::Renew {
                    with: Ldevid,
                    call: Reenroll,
                },
            ),
        ];
        for (name, i, want) in cases {
            assert_eq!(decide(&p, i), *want, "{name}");
        }
        // The first enrollment waits for its drawn time, and for a backoff beyond it.
        let first = |now, retry| Inputs {
            now,
            ldevid: None,
            due: None,
            enroll_at: Some(40),
            retry,
        };
        assert_eq!(decide(&p, &first(5, r0)), Decision::Wait { until: 40 });
        assert_eq!(
            decide(&p, &first(40, r0)),
            Decision::Renew {
                with: Idevid,
                call: Enroll
            }
        );
        let later = Retry {
            attempts: 1,
            next_try: 100,
            ldevid_refused: false,
        };
        assert_eq!(decide(&p, &first(50, later)), Decision::Wait { until: 100 });
        // renewal_grace 0: an expired LDevID is never presented.
        let no_grace = Policy {
            renewal_grace: Duration::ZERO,
            ..p
        };
        let i = Inputs {
            now: 90 * DAY,
            ldevid: Some(l),
            due: Some(due),
            enroll_at: None,
            retry: r0,
        };
        assert_eq!(
            decide(&no_grace, &i),
            Decision::Renew {
                with: Idevid,
                call: Enroll
            }
        );
    }

    #[test]
    fn outcomes_move_the_retry_state() {
        let p = policy();
        let u = Unit::new(0.0);
        let r = after(&p, Retry::default(), 1_000, Outcome::Unreachable, u);
        assert_eq!(
            r,
            Retry {
                attempts: 1,
                next_try: 1_015,
                ldevid_refused: false
            }
        );
        let r = after(&p, r, 1_015, Outcome::Unreachable, u);
        assert_eq!((r.attempts, r.next_try), (2, 1_045));
        let r2 = after(&p, r, 1_045, Outcome::RetryAfter(600), u);
        assert_eq!((r2.attempts, r2.next_try), (3, 1_645));
        let refused = after(&p, r, 2_000, Outcome::Refused(Credential::Ldevid), u);
        assert_eq!(
            refused,
            Retry {
                attempts: 3,
                next_try: 2_000,
                ldevid_refused: true
            }
        );
        let idevid_refused = after(&p, refused, 2_000, Outcome::Refused(Credential::Idevid), u);
        assert!(idevid_refused.next_try > 2_000 && idevid_refused.ldevid_refused);
        assert_eq!(
            after(&p, refused, 3_000, Outcome::Issued, u),
            Retry::default()
        );
    }

    #[test]
    fn connects_with_the_ldevid_only_while_it_is_valid() {
        let l = v(0, 1);
        assert_eq!(connect_with(10, None), Credential::Idevid);
        assert_eq!(connect_with(10, Some(l)), Credential::Ldevid);
        assert_eq!(connect_with(DAY, Some(l)), Credential::Idevid);
    }

    #[test]
    fn a_fleet_issued_in_one_second_spreads_over_a_sixth_of_the_lifetime() {
        // 10,000 LDevIDs issued in the same second, 90 days: the busiest hour holds a share
        // close to the uniform 1/(15*24) (with 10,000 draws, within a factor of 2).
        let c = v(0, 90);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut per_hour = vec![0u32; 90 * 24];
        for _ in 0..10_000 {
            // splitmix64: a deterministic stream for the test.
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let t = renew_at(c, Unit::from_bits(z));
            per_hour[(t / 3_600) as usize] += 1;
        }
        let busy: Vec<usize> = (0..per_hour.len()).filter(|h| per_hour[*h] > 0).collect();
        assert_eq!(busy.first(), Some(&(60 * 24)));
        assert_eq!(busy.last(), Some(&(75 * 24 - 1)));
        let max = per_hour.iter().max().copied().unwrap_or(0);
        assert!(max <= 2 * 10_000 / (15 * 24), "busiest hour {max}");
    }
}
