//! When a fleet renews: the agent's own scheduling function (`renew::engine::renew_at`) applied to
//! a simulated fleet, against the same fleet with no jitter (renewal at exactly 2/3 of the
//! lifetime, the fixed point a scheduler without jitter picks).
//!
//! `cargo run --release -p devid-device --example jitter_spread -- [DEVICES] [VALIDITY_DAYS]`
//! (default 100000 devices, 90 days). Two fleets: made over one day (LDevIDs issued uniformly
//! over 24 h) and switched on together (every LDevID issued in the same minute). Three rounds of
//! renewal each (a renewal's new LDevID starts when it was issued). Prints per-round the span,
//! the busiest minute and hour, and a per-day histogram of the first round.

use devid_device::renew::engine::{renew_at, Unit, Validity};
use ring::rand::{SecureRandom, SystemRandom};

fn draw(rng: &SystemRandom) -> Unit {
    let mut b = [0u8; 8];
    rng.fill(&mut b).expect("OS randomness");
    Unit::from_bits(u64::from_be_bytes(b))
}

struct Stats {
    first: u64,
    last: u64,
    busiest_minute: usize,
    busiest_hour: usize,
}

fn stats(times: &[u64]) -> Stats {
    let first = times.iter().copied().min().unwrap_or(0);
    let last = times.iter().copied().max().unwrap_or(0);
    let bucket = |secs: u64| {
        let mut m = std::collections::HashMap::<u64, usize>::new();
        for t in times {
            *m.entry(t / secs).or_default() += 1;
        }
        m.values().copied().max().unwrap_or(0)
    };
    Stats {
        first,
        last,
        busiest_minute: bucket(60),
        busiest_hour: bucket(3_600),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let devices: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let days: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(90);
    let life = days * 86_400;
    let rng = SystemRandom::new();
    println!("{devices} devices, LDevID validity {days} days");
    for (fleet, spread) in [
        ("made over one day", 86_400u64),
        ("switched on in one minute", 60),
    ] {
        // Issue times of the first LDevIDs.
        let issued: Vec<u64> = (0..devices)
            .map(|_| (draw(&rng).get() * spread as f64) as u64)
            .collect();
        for (law, jitter) in [("2/3 + jitter (agent)", true), ("2/3, no jitter", false)] {
            println!("\nfleet {fleet}; schedule {law}");
            println!("| round | first renewal (day) | last (day) | span (h) | busiest minute | busiest hour |");
            println!("|---|---|---|---|---|---|");
            let mut starts = issued.clone();
            for round in 1..=3 {
                let times: Vec<u64> = starts
                    .iter()
                    .map(|&nb| {
                        let v = Validity {
                            not_before: nb,
                            not_after: nb + life,
                        };
                        renew_at(v, if jitter { draw(&rng) } else { Unit::new(0.0) })
                    })
                    .collect();
                let s = stats(&times);
                println!(
                    "| {round} | {:.2} | {:.2} | {:.1} | {} | {} |",
                    s.first as f64 / 86_400.0,
                    s.last as f64 / 86_400.0,
                    (s.last - s.first) as f64 / 3_600.0,
                    s.busiest_minute,
                    s.busiest_hour
                );
                if round == 1 && jitter {
                    let mut per_day = std::collections::BTreeMap::<u64, usize>::new();
                    for t in &times {
                        *per_day.entry(t / 86_400).or_default() += 1;
                    }
                    let line: Vec<String> =
                        per_day.iter().map(|(d, n)| format!("d{d}:{n}")).collect();
                    println!("round 1 per day: {}", line.join(" "));
                }
                starts = times;
            }
        }
    }
}
