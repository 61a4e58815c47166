//! `hush-fuzz TARGET`: runs one fuzz target under AFL++ (built with `cargo
//! afl build -p hush-fuzz --features afl`); run by hand, it reads one input
//! from standard input, to replay a crash
//! (`target/afl/release/hush-fuzz TARGET < CRASH`).

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(run) = hush_fuzz::target(&name) else {
        let names: Vec<&str> = hush_fuzz::TARGETS.iter().map(|(name, _)| *name).collect();
        eprintln!("usage: hush-fuzz TARGET (one of: {})", names.join(", "));
        std::process::exit(2);
    };
    afl::fuzz!(|data: &[u8]| run(data));
}
