//! The group simulation (`hush_testkit::simulation`) over seeded
//! schedules. A failing seed prints itself and replays with
//! `HUSH_SIM_SEED=N`; `HUSH_SIM_SEEDS=N` runs a campaign of N seeds.

use rand::rngs::StdRng;
use rand::SeedableRng;

/// Seeds the test command runs, split over two tests (two cores).
const DEFAULT_SEEDS: u64 = 2000;

fn run(seed: u64) {
    let outcome = std::panic::catch_unwind(|| hush_testkit::simulation::run(StdRng::seed_from_u64(seed)));
    if let Err(panic) = outcome {
        eprintln!("simulation failed with seed {seed}: replay it with HUSH_SIM_SEED={seed}");
        std::panic::resume_unwind(panic);
    }
}

/// Runs this test's share (`part` of `parts`) of the seeds.
fn campaign(part: u64, parts: u64) {
    if let Some(seed) = std::env::var("HUSH_SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        if part == 0 {
            run(seed);
        }
        return;
    }
    let seeds = std::env::var("HUSH_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_SEEDS);
    for seed in (part..seeds).step_by(parts as usize) {
        run(seed);
    }
}

#[test]
fn seeded_schedules_converge_even_seeds() {
    campaign(0, 2);
}

#[test]
fn seeded_schedules_converge_odd_seeds() {
    campaign(1, 2);
}
