//! A private PostgreSQL server for tests: its own cluster in a temporary
//! directory, reachable only on a Unix socket in that directory, started
//! with Debian's server binaries (`scripts/setup.sh --tests` installs them).
//!
//! Key design decisions:
//! - No mocks: the relay's PostgreSQL tests run against a real server.
//! - The server cannot outlive the test process. It runs under a small
//!   shell guard that reads the test process's end of a pipe; when that
//!   pipe closes (the cluster is dropped, or the test process exits or is
//!   killed), the guard shuts the server down and deletes its directory.
//! - PostgreSQL refuses to run as root, and CI runs as root: there the
//!   cluster belongs to the `postgres` system user (made by Debian's
//!   package), its directory is handed to that user and every server
//!   program runs with its uid.
//!
//! [`Cluster::shared`] is one server per test binary, with a fresh
//! database per test ([`Cluster::database`]); [`Cluster::start`] is a
//! server of a test's own, for tests that stop and restart it.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The database user every test connects as.
pub const USER: &str = "hush";

/// A running private PostgreSQL server.
pub struct Cluster {
    bin: PathBuf,
    /// The cluster's directory: `data/`, `socket/` and `server.log`.
    root: PathBuf,
    /// Who runs the server programs (uid, gid), when the tests run as root.
    owner: Option<(u32, u32)>,
    guard: Mutex<Option<Guard>>,
}

/// The shell guard around a running server, and our end of its pipe.
struct Guard {
    child: Child,
    pipe: Option<ChildStdin>,
}

impl Guard {
    /// Closes the pipe: the guard stops the server (an immediate shutdown,
    /// as after a crash) and exits.
    fn stop(mut self) {
        drop(self.pipe.take());
        let _ = self.child.wait();
    }
}

static NEXT_DATABASE: AtomicU32 = AtomicU32::new(1);

impl Cluster {
    /// Makes a new cluster (initdb) and starts its server.
    pub fn start() -> io::Result<Self> {
        let cluster = Self::unstarted()?;
        cluster.init()?;
        cluster.start_server()?;
        Ok(cluster)
    }

    /// A cluster directory with no data yet (deleted when dropped).
    fn unstarted() -> io::Result<Self> {
        let bin = server_binaries()?;
        let owner = if is_root()? { Some(postgres_user()?) } else { None };
        let root = tempfile::Builder::new().prefix("hush-pg-").tempdir()?.keep();
        let cluster = Self { bin, root, owner, guard: Mutex::new(None) };
        std::fs::set_permissions(&cluster.root, std::fs::Permissions::from_mode(0o755))?;
        std::fs::create_dir(cluster.socket_dir())?;
        if let Some((uid, gid)) = cluster.owner {
            std::os::unix::fs::chown(&cluster.root, Some(uid), Some(gid))?;
            std::os::unix::fs::chown(cluster.socket_dir(), Some(uid), Some(gid))?;
        }
        Ok(cluster)
    }

    /// A streaming-replication standby of this cluster, copied from it
    /// now (`pg_basebackup`) and started: read-only until promoted.
    pub fn standby(&self) -> io::Result<Self> {
        let standby = Self::unstarted()?;
        standby.run(
            standby
                .program("pg_basebackup")
                .arg("-D")
                .arg(standby.root.join("data"))
                .args(["-R", "-X", "stream", "--checkpoint=fast", "-U", USER, "-p", "5432", "-h"])
                .arg(self.socket_dir()),
        )?;
        standby.start_server()?;
        Ok(standby)
    }

    /// From now on a commit waits until a standby has it too
    /// (`synchronous_standby_names = '*'`).
    pub fn require_synchronous_standby(&self) -> io::Result<()> {
        self.psql("ALTER SYSTEM SET synchronous_standby_names = '*'")?;
        self.psql("SELECT pg_reload_conf()")
    }

    /// Makes a standby the primary (`pg_ctl promote`, waiting until it
    /// accepts writes).
    pub fn promote(&self) -> io::Result<()> {
        self.run(self.program("pg_ctl").arg("promote").arg("-w").arg("-D").arg(self.root.join("data")))
    }

    /// Runs one query in the `postgres` database and answers its output
    /// (unaligned, tuples only).
    pub fn query(&self, sql: &str) -> io::Result<String> {
        let output = self
            .program("psql")
            .args([
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                USER,
                "-d",
                "postgres",
                "-p",
                "5432",
                "-c",
            ])
            .arg(sql)
            .arg("-h")
            .arg(self.socket_dir())
            .output()?;
        if !output.status.success() {
            return Err(io::Error::other(String::from_utf8_lossy(&output.stderr).into_owned()));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    fn psql(&self, sql: &str) -> io::Result<()> {
        self.run(
            self.program("psql")
                .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-U", USER, "-d", "postgres", "-p", "5432", "-c"])
                .arg(sql)
                .arg("-h")
                .arg(self.socket_dir()),
        )
    }

    /// The cluster this test binary shares (started on first use), or a
    /// panic saying why there is none.
    pub fn shared() -> &'static Cluster {
        static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();
        match SHARED.get_or_init(|| Cluster::start().map_err(|error| error.to_string())) {
            Ok(cluster) => cluster,
            Err(error) => {
                #[allow(clippy::panic)]
                {
                    panic!("no PostgreSQL server for the tests ({error}); run scripts/setup.sh --tests")
                }
            }
        }
    }

    fn init(&self) -> io::Result<()> {
        let data = self.root.join("data");
        self.run(self.program("initdb").arg("-D").arg(&data).args([
            "-U",
            USER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]))
    }

    fn start_server(&self) -> io::Result<()> {
        let _ = std::fs::remove_file(self.root.join("keep"));
        // The guard: the server in the background, then wait for our end
        // of the pipe to close, then an immediate shutdown, then delete
        // the cluster unless it is only stopped for a restart (`keep`).
        let script = r#"
            "$1/postgres" -D "$2/data" -k "$2/socket" -c listen_addresses= -c port=5432 \
                -c max_connections=200 >>"$2/server.log" 2>&1 &
            pid=$!
            cat >/dev/null
            kill -QUIT "$pid" 2>/dev/null
            wait "$pid"
            if [ ! -f "$2/keep" ]; then rm -rf "$2"; fi
        "#;
        let mut command = self.program_raw("sh");
        command
            .arg("-c")
            .arg(script)
            .arg("sh")
            .arg(&self.bin)
            .arg(&self.root)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = command.spawn()?;
        let pipe = child.stdin.take();
        let guard = Guard { child, pipe };
        let ready = self.wait_ready();
        *self.guard.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(guard);
        ready
    }

    fn wait_ready(&self) -> io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let status = self
                .program("pg_isready")
                .args(["-q", "-U", USER, "-d", "postgres", "-p", "5432", "-h"])
                .arg(self.socket_dir())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?;
            if status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default();
                return Err(io::Error::other(format!("PostgreSQL did not start: {log}")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server at once, as a crash would (`pg_ctl stop -m
    /// immediate`): no checkpoint, clients cut off.
    pub fn stop(&self) {
        let _ = std::fs::write(self.root.join("keep"), b"");
        let guard = self.guard.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(guard) = guard {
            guard.stop();
        }
    }

    /// Starts the server again on the same data (after [`Self::stop`]).
    pub fn restart(&self) -> io::Result<()> {
        self.stop();
        self.start_server()
    }

    /// The running server's main process (for benchmarks that measure
    /// its CPU time), from `postmaster.pid`.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let pid = std::fs::read_to_string(self.root.join("data/postmaster.pid")).ok()?;
        pid.lines().next()?.trim().parse().ok()
    }

    /// The directory of the server's socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.root.join("socket")
    }

    /// A connection URL for `database` (the socket directory as the host,
    /// percent-encoded, so no TCP host is ever tried).
    pub fn url(&self, database: &str) -> String {
        format!("postgresql://{USER}@{}/{database}", self.host())
    }

    /// `host:port` of this server in a URL: its socket directory,
    /// percent-encoded (a URL may list several, comma-separated).
    pub fn host(&self) -> String {
        let mut host = String::new();
        for byte in self.socket_dir().to_string_lossy().bytes() {
            match byte {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => host.push(char::from(byte)),
                other => host.push_str(&format!("%{other:02X}")),
            }
        }
        format!("{host}:5432")
    }

    /// Creates a new, empty database and returns its URL.
    pub fn database(&self) -> String {
        let name = format!("t{}_{}", std::process::id(), NEXT_DATABASE.fetch_add(1, Ordering::Relaxed));
        let created = self
            .program("createdb")
            .args(["-U", USER, "-p", "5432", "-h"])
            .arg(self.socket_dir())
            .arg(&name)
            .output();
        match created {
            Ok(output) if output.status.success() => self.url(&name),
            #[allow(clippy::panic)]
            Ok(output) => panic!("createdb failed: {}", String::from_utf8_lossy(&output.stderr)),
            #[allow(clippy::panic)]
            Err(error) => panic!("createdb failed: {error}"),
        }
    }

    fn program(&self, name: &str) -> Command {
        self.program_raw(&self.bin.join(name).to_string_lossy())
    }

    fn program_raw(&self, name: &str) -> Command {
        let mut command = Command::new(name);
        command.current_dir(&self.root);
        if let Some((uid, gid)) = self.owner {
            command.uid(uid).gid(gid);
        }
        command
    }

    fn run(&self, command: &mut Command) -> io::Result<()> {
        let output = command.output()?;
        if output.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "{:?} failed: {}",
                command.get_program(),
                String::from_utf8_lossy(&output.stderr)
            )))
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let guard = self.guard.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(guard) = guard {
            guard.stop();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The newest installed server's program directory (`HUSH_PG_BIN`
/// overrides it).
fn server_binaries() -> io::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("HUSH_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| io::Error::other("PostgreSQL's server is not installed (/usr/lib/postgresql)"))?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| io::Error::other("no PostgreSQL server binaries under /usr/lib/postgresql"))
}

fn is_root() -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    // Our own process's files belong to our uid.
    Ok(std::fs::metadata("/proc/self")?.uid() == 0)
}

/// The `postgres` system user's uid and gid, from /etc/passwd.
fn postgres_user() -> io::Result<(u32, u32)> {
    let passwd = std::fs::read_to_string(Path::new("/etc/passwd"))?;
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            match fields.as_slice() {
                ["postgres", _, uid, gid, ..] => Some((uid.parse().ok()?, gid.parse().ok()?)),
                _ => None,
            }
        })
        .ok_or_else(|| {
            io::Error::other("running as root, and there is no postgres user to run PostgreSQL as")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_starts_makes_databases_and_leaves_nothing_when_dropped() {
        let cluster = Cluster::start().unwrap();
        let url = cluster.database();
        let socket = cluster.socket_dir().display().to_string().replace('/', "%2F");
        assert!(url.starts_with(&format!("postgresql://{USER}@{socket}:5432/")), "{url}");
        let root = cluster.root.clone();
        assert!(root.join("data/PG_VERSION").exists());
        cluster.restart().unwrap();
        let again = cluster.database();
        assert_ne!(url, again);
        drop(cluster);
        assert!(!root.exists(), "the cluster's directory is left behind");
    }
}
