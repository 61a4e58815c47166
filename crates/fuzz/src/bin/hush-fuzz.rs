//! `hush-fuzz TARGET`: runs one fuzz target under AFL++ (built with `cargo
//! afl build`), or, built normally, on the bytes of standard input (to
//! replay a crash).

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(run) = hush_fuzz::target(&name) else {
        let names: Vec<&str> = hush_fuzz::TARGETS.iter().map(|(name, _)| *name).collect();
        eprintln!("usage: hush-fuzz TARGET (one of: {})", names.join(", "));
        std::process::exit(2);
    };
    afl::fuzz!(|data: &[u8]| run(data));
}
