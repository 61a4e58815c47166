//! Records the commit `hush` is built from, for `hush --version`:
//! `HUSH_COMMIT` if set (a build from a source archive), else what git
//! says of this checkout, else "unknown".

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=HUSH_COMMIT");
    let commit = std::env::var("HUSH_COMMIT").ok().filter(|c| !c.is_empty()).or_else(git_commit);
    println!("cargo:rustc-env=HUSH_COMMIT={}", commit.as_deref().unwrap_or("unknown"));
}

/// The checkout's commit; tells cargo to look again when HEAD moves.
fn git_commit() -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let output = Command::new("git").args(args).output().ok()?;
        output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    let git_dir = git(&["rev-parse", "--absolute-git-dir"])?;
    let git_dir = Path::new(&git_dir);
    println!("cargo:rerun-if-changed={}", git_dir.join("HEAD").display());
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
        let path = git_dir.join(&reference);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
        println!("cargo:rerun-if-changed={}", git_dir.join("packed-refs").display());
    }
    git(&["rev-parse", "HEAD"]).filter(|commit| commit.len() == 40)
}
