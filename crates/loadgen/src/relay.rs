//! The relay under test: started from the workspace's `hush` binary in a
//! temporary directory (or attached to a running one), with its CPU time and
//! RSS read from /proc.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};
use hush_proto::{CertificatePin, Invite};

/// A relay to drive (or the first relay of a cluster).
pub struct RelayUnderTest {
    /// Where clients connect.
    pub address: String,
    /// Its certificate pin.
    pub pin: CertificatePin,
    data: PathBuf,
    child: Option<Child>,
    /// The other relays of the cluster (same store, same certificate).
    peers: Vec<RelayUnderTest>,
    /// The run's own PostgreSQL server (`--store private`).
    database: Option<hush_pgtest::Cluster>,
    _temp: Option<TempDir>,
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "hush-loadgen-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn hush_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("HUSH_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("no executable directory")?;
    for candidate in [dir.join("hush"), dir.join("../hush")] {
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    bail!("cannot find the `hush` binary next to hush-loadgen: build it (cargo build --release -p hush-cli) or set HUSH_BIN")
}

impl RelayUnderTest {
    /// Starts `relays` relays on `store` (a URL, `private`, or None for
    /// the embedded store).
    pub fn start_cluster(store: Option<&str>, relays: usize) -> Result<Self> {
        let Some(store) = store else {
            if relays > 1 {
                bail!("--relays {relays} needs --store: relays share a PostgreSQL store");
            }
            return Self::start(&[]);
        };
        let (url, database) = match store {
            "private" => {
                let database = hush_pgtest::Cluster::start().context("starting a private PostgreSQL")?;
                (database.database(), Some(database))
            }
            url => (url.to_owned(), None),
        };
        let mut first = Self::start(&["--store", &url])?;
        first.database = database;
        for _ in 1..relays {
            let temp = TempDir::new()?;
            let data = temp.0.join("relay");
            Self::prepare(&data)?;
            for file in ["cert.pem", "key.pem"] {
                std::fs::copy(first.data.join(file), data.join(file))?;
            }
            let mut peer = Self::spawn(&data, "127.0.0.1:0", &["--store", &url])?;
            peer._temp = Some(temp);
            first.peers.push(peer);
        }
        Ok(first)
    }

    /// The address of relay `node` of the cluster (round robin).
    pub fn node(&self, node: usize) -> &str {
        match node % (self.peers.len() + 1) {
            0 => &self.address,
            peer => &self.peers[peer - 1].address,
        }
    }

    /// Relays in the cluster.
    pub fn relays(&self) -> usize {
        self.peers.len() + 1
    }

    /// CPU seconds the run's own PostgreSQL server used so far (all its
    /// processes), if it has one.
    pub fn database_cpu_seconds(&self) -> Option<f64> {
        let postmaster = self.database.as_ref()?.postmaster_pid()?;
        let mut total = process_cpu_seconds(postmaster)?;
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
                continue;
            };
            if parent_pid(pid) == Some(postmaster) {
                total += process_cpu_seconds(pid).unwrap_or(0.0);
            }
        }
        Some(total)
    }

    /// Starts a fresh relay on a temporary data directory.
    fn start(extra: &[&str]) -> Result<Self> {
        let temp = TempDir::new()?;
        let data = temp.0.join("relay");
        Self::prepare(&data)?;
        let mut relay = Self::spawn(&data, "127.0.0.1:0", extra)?;
        relay._temp = Some(temp);
        Ok(relay)
    }

    /// A data directory with the load generator's settings.
    fn prepare(data: &Path) -> Result<()> {
        // Every simulated device connects from one of 8 loopback
        // addresses: no per-address connection limit.
        std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700).create(data)?;
        std::fs::write(
            data.join("relay.json"),
            "{\"max_connections_per_address\": 0, \"tokens_per_day\": 100000000}\n",
        )?;
        Ok(())
    }

    fn spawn(data: &Path, listen: &str, extra: &[&str]) -> Result<Self> {
        let mut child = Command::new(hush_binary()?)
            .args(["serve", "--data"])
            .arg(data)
            .args(["--listen", listen])
            .args(extra)
            .env("HUSH_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the relay")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("no relay stdout")?).read_line(&mut line)?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let after = |key: &str| words.iter().position(|w| *w == key).and_then(|i| words.get(i + 1)).copied();
        let (Some(address), Some(pin)) = (after("on"), after("pin")) else {
            bail!("the relay did not start: {line}");
        };
        Ok(Self {
            address: address.to_owned(),
            pin: pin.parse()?,
            data: data.to_path_buf(),
            child: Some(child),
            peers: Vec::new(),
            database: None,
            _temp: None,
        })
    }

    /// A handle that only knows where the relay is (for reconnecting tasks).
    pub fn detached(address: &str, pin: CertificatePin) -> Self {
        Self {
            address: address.to_owned(),
            pin,
            data: PathBuf::new(),
            child: None,
            peers: Vec::new(),
            database: None,
            _temp: None,
        }
    }

    /// Attaches to a running relay.
    pub fn attach(address: &str, data: &Path) -> Result<Self> {
        let invite = Self::invites_from(data, 1, 1)?;
        Ok(Self {
            address: address.to_owned(),
            pin: invite.pin,
            data: data.to_path_buf(),
            child: None,
            peers: Vec::new(),
            database: None,
            _temp: None,
        })
    }

    fn invites_from(data: &Path, count: usize, uses: usize) -> Result<Invite> {
        let out = Command::new(hush_binary()?)
            .args(["admin", "invite", "--data"])
            .arg(data)
            .args(["--count", &count.to_string(), "--uses", &uses.to_string()])
            .output()?;
        if !out.status.success() {
            bail!("hush admin invite failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let text = String::from_utf8(out.stdout)?;
        Ok(text.lines().next().context("no invite printed")?.parse()?)
    }

    /// One invite good for `uses` registrations.
    pub fn invite(&self, uses: usize) -> Result<Invite> {
        Self::invites_from(&self.data, 1, uses)
    }

    /// Pre-enrols `count` offline accounts through `hush admin provision`
    /// (random keys: they never log in; they only make the store big).
    pub fn provision(&self, count: usize) -> Result<()> {
        use std::io::Write;
        let mut child = Command::new(hush_binary()?)
            .args(["admin", "provision", "-", "--data"])
            .arg(&self.data)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?;
        let mut stdin = std::io::BufWriter::new(child.stdin.take().context("no stdin")?);
        let hex = |bytes: [u8; 32]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        for _ in 0..count {
            writeln!(stdin, "{} {}", hex(rand::random()), hex(rand::random()))?;
        }
        drop(stdin);
        if !child.wait()?.success() {
            bail!("hush admin provision failed");
        }
        Ok(())
    }

    /// The relay's process id, if we started it.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Resident memory in KiB (of every relay of the cluster).
    pub fn rss_kib(&self) -> Option<u64> {
        let mut total = process_rss_kib(self.pid()?)?;
        for peer in &self.peers {
            total += peer.rss_kib()?;
        }
        Some(total)
    }

    /// CPU seconds used so far (user + system, every relay of the cluster).
    pub fn cpu_seconds(&self) -> Option<f64> {
        let mut total = process_cpu_seconds(self.pid()?)?;
        for peer in &self.peers {
            total += peer.cpu_seconds()?;
        }
        Some(total)
    }

    /// Kills the relay with SIGKILL and starts it again on the same data.
    pub fn kill_and_restart(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else { bail!("cannot kill a relay we did not start") };
        child.kill()?;
        child.wait()?;
        let mut restarted = Self::spawn(&self.data, &self.address, &[])?;
        self.child = restarted.child.take();
        Ok(())
    }
}

/// A process's resident memory in KiB, from /proc.
pub fn process_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A process's parent, from /proc.
fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// A process's CPU seconds so far (user + system), from /proc.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

impl Drop for RelayUnderTest {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }
}
