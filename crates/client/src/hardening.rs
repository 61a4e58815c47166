//! Keeping a client process's memory to itself.
//!
//! While a profile is unlocked its database key, the MLS secrets and
//! decrypted messages are in memory. A core dump would write all of it to
//! disk in the clear, and another process of the same user could read it
//! through ptrace or /proc. [`harden_process`] turns both off; it needs no
//! `unsafe` (rustix wraps the system calls).

/// Disables core dumps for this process (`RLIMIT_CORE` 0, soft and hard,
/// so it cannot be raised again) and marks it not dumpable
/// (`PR_SET_DUMPABLE` 0: no core even if a limit is raised, no ptrace
/// attach by other non-root processes, and /proc/PID/mem and environ
/// readable only by root).
pub fn harden_process() -> std::io::Result<()> {
    use rustix::process::{set_dumpable_behavior, setrlimit, DumpableBehavior, Resource, Rlimit};
    setrlimit(Resource::Core, Rlimit { current: Some(0), maximum: Some(0) })?;
    set_dumpable_behavior(DumpableBehavior::NotDumpable)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_hardened_process_has_no_core_limit_and_is_not_dumpable() {
        use rustix::process::{dumpable_behavior, getrlimit, DumpableBehavior, Resource};
        // A child process, so the test runner itself stays debuggable.
        if std::env::var_os("HUSH_HARDENING_CHILD").is_some() {
            super::harden_process().unwrap();
            let limit = getrlimit(Resource::Core);
            assert_eq!((limit.current, limit.maximum), (Some(0), Some(0)));
            assert_eq!(dumpable_behavior().unwrap(), DumpableBehavior::NotDumpable);
            return;
        }
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "hardening::tests::a_hardened_process_has_no_core_limit_and_is_not_dumpable"])
            .env("HUSH_HARDENING_CHILD", "1")
            .status()
            .unwrap();
        assert!(status.success());
    }
}
