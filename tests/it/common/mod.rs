//! Shared support for real-socket tests: free ports, scratch directories, guarded child
//! processes, the `sipedge` proxy under test ([`proxy`]), its management API client ([`mgmt`]) and the
//! SIPp runner ([`sipp`]), and single SIPp UAS/UAC processes for multi-UAC acceptance tests
//! ([`agent`]).
//!
//! Invariants every helper keeps, so that tests can run in parallel and never leak:
//! - Everything binds to 127.0.0.1 only, on ports handed out by [`free_port_pair`], which
//!   never hands the same port twice within one test binary.
//! - Every child process lives in a [`ChildGuard`]: dropping it (also while a failing test
//!   unwinds) sends SIGTERM, then SIGKILL after a grace period, and reaps the child. On Linux
//!   the child also gets SIGKILL if the spawning thread dies (`PR_SET_PDEATHSIG`).
//! - Every wait is bounded: there is no blocking call without a deadline.
//! - Each test works in its own [`TempDir`]; it is removed on success and kept (path
//!   printed) when the test fails, for the SIPp logs inside.
// Not every helper is used by the tests of this binary (`tests/it/`).
#![allow(dead_code)]

pub mod agent;
pub mod mgmt;
pub mod proxy;
pub mod sipp;

use std::collections::HashSet;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// The loopback address every test socket uses.
pub const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Wall-clock time for test deadlines. Real-socket tests are the one place outside `src/io/`
/// that needs the real clock; this is the only call site in the test support code.
#[allow(clippy::disallowed_methods)] // tests drive real processes: they need the real clock
pub fn now() -> Instant {
    Instant::now()
}

/// Ports already handed out in this process (never handed out again).
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Tries to claim `port`: free for UDP and TCP on 127.0.0.1 right now and not handed out yet.
fn claim(port: u16) -> bool {
    let mut guard = match HANDED_OUT.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    let set = guard.get_or_insert_with(HashSet::new);
    if port == 0 || set.contains(&port) {
        return false;
    }
    let udp = UdpSocket::bind((LOCALHOST, port));
    let tcp = TcpListener::bind((LOCALHOST, port));
    if udp.is_ok() && tcp.is_ok() {
        set.insert(port);
        true
    } else {
        false
    }
}

/// The `loadgen` binary that `cargo test --workspace` builds next to `sipedge`.
pub fn loadgen_bin() -> std::path::PathBuf {
    let p = std::path::PathBuf::from(env!("CARGO_BIN_EXE_sipedge")).with_file_name("loadgen");
    assert!(
        p.exists(),
        "{} not built: run `cargo test --workspace` (or `cargo build -p loadgen`)",
        p.display()
    );
    p
}

/// A port on 127.0.0.1 that is free for both UDP and TCP and that no other test in this
/// binary got. Panics if none is found after many tries (the machine is out of ports).
pub fn free_udp_port() -> u16 {
    // Ports come from below the kernel's ephemeral range (32768-60999 on Linux): sockets bound
    // to port 0 (the proxy's per-worker send sockets, clients) can then never grab a port
    // between the moment a test picks it and the moment its server binds it. Each test binary
    // starts at an offset from its pid so parallel binaries rarely probe the same ports.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 12_000 + (std::process::id() % 200) * 100;
    for _ in 0..20_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 10_000 + (base - 10_000 + n) % 22_000;
        if let Ok(port) = u16::try_from(port)
            && claim(port)
        {
            return port;
        }
    }
    panic!("no free UDP+TCP port on 127.0.0.1 below the ephemeral range");
}

/// Two distinct ports, each free for both UDP and TCP (e.g. SIP + management).
pub fn free_port_pair() -> (u16, u16) {
    (free_udp_port(), free_udp_port())
}

/// `127.0.0.1:port`.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from((LOCALHOST, port))
}

/// A scratch directory of one test; removed on drop unless the thread is panicking.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `$TMPDIR/sipedge-<name>-<pid>-<n>` (fresh, empty).
    pub fn new(name: &str) -> TempDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("sipedge-{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        if let Err(e) = fs::create_dir_all(&path) {
            panic!("cannot create scratch dir {}: {e}", path.display());
        }
        TempDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A file inside the directory.
    pub fn join(&self, file: &str) -> PathBuf {
        self.path.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("test failed: scratch files kept in {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Reads the last `max` bytes of a text file (for failure messages); empty if unreadable.
pub fn tail(path: &Path, max: usize) -> String {
    let data = fs::read(path).unwrap_or_default();
    let start = data.len().saturating_sub(max);
    String::from_utf8_lossy(data.get(start..).unwrap_or_default()).into_owned()
}

/// Spawns `cmd` with the Linux parent-death signal set to SIGKILL, so the child cannot
/// outlive the test thread even if the test binary itself is killed.
pub fn spawn_guarded(cmd: &mut Command, name: &str) -> io::Result<ChildGuard> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure runs in the forked child before exec and only calls prctl,
        // which is async-signal-safe; it touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let child = cmd.spawn()?;
    Ok(ChildGuard {
        child: Some(child),
        name: name.to_owned(),
    })
}

/// A child process that is stopped (SIGTERM, SIGKILL after 2 s) and reaped on drop.
pub struct ChildGuard {
    child: Option<Child>,
    name: String,
}

impl ChildGuard {
    /// The OS process id (0 once the child was reaped).
    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The name given at spawn time (for messages).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Exit status if the child has already exited (does not block).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits up to `timeout` for the child to exit by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal to the child (no-op once it was reaped).
    pub fn signal(&self, sig: libc::c_int) {
        let Some(child) = self.child.as_ref() else {
            return;
        };
        let Ok(pid) = libc::pid_t::try_from(child.id()) else {
            return;
        };
        // SAFETY: plain syscall on a pid we spawned and have not reaped yet, so the pid
        // cannot have been reused by another process.
        unsafe {
            libc::kill(pid, sig);
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL; always reaps. Returns the exit status.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.try_wait() {
            self.child = None;
            return Some(status);
        }
        self.signal(libc::SIGTERM);
        let status = self.wait_timeout(grace).or_else(|| {
            let child = self.child.as_mut()?;
            let _ = child.kill();
            child.wait().ok()
        });
        self.child = None;
        status
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(2));
    }
}
