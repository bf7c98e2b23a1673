//! Socket set-up: one SO_REUSEPORT UDP socket (and TCP listener) per worker and listen
//! address, large buffers, and a reuseport BPF program that spreads datagrams at random over
//! the first `n` workers (`io::spread` chooses `n`), so load spreads even when every packet
//! comes from one peer address.
//!
//! Invariant: sockets of one address are created in worker order, so the BPF program's
//! return value `i` selects worker `i`'s socket.
//!
//! # One process per listen address
//! SO_REUSEPORT lets any process of the same user join a listen address and silently take a
//! share of its traffic, so [`claim`] runs before the reuseport sockets are bound:
//! - A probe binds the address *without* SO_REUSEPORT. On Linux this fails with
//!   `EADDRINUSE` whenever any socket holds the address, including a reuseport group and an
//!   overlapping wildcard or specific address (verified on Linux 6.x). The UDP probe sets no
//!   SO_REUSEADDR either (for UDP it would let the probe join sockets that set it too); the TCP
//!   probe sets SO_REUSEADDR so connections of a previous run left in TIME_WAIT do not count,
//!   while a listener still does.
//! - A lock closes the race of two instances starting at once (both probing before either
//!   binds): an abstract UNIX socket named after the address (`sipedge-udp-127.0.0.1:5060`),
//!   held for the life of the process. The kernel releases it when the process exits, however
//!   it exits, and it is scoped to the network namespace, like the port. (Linux only.)
//!
//! Port 0 (the kernel picks a free port) is never probed.
//!
//! # Open-file limit
//! Every TCP connection is a descriptor, so [`raise_open_files`] sets the soft RLIMIT_NOFILE
//! at start (to the hard limit, or to `core.max_open_files`); it never panics and reports what
//! it got, so the caller can log a failure and go on.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

use crate::wire::Transport;

/// Receive/send buffer size asked for (the kernel may cap it at `net.core.rmem_max`).
pub const SOCKET_BUFFER: usize = 8 << 20;

fn base(addr: SocketAddr, ty: Type, proto: Protocol) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

/// A bound, non-blocking UDP socket with SO_REUSEPORT and large buffers.
pub fn udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let s = base(addr, Type::DGRAM, Protocol::UDP)?;
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    enable_rx_timestamps(&s);
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Ask the kernel to stamp each received datagram with its arrival time (SO_TIMESTAMPNS), so
/// a worker knows how long its backlog waited (overload control). Best effort: without it,
/// overload control never triggers.
fn enable_rx_timestamps(s: &Socket) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: a plain setsockopt on a socket we own, with a c_int option value.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            tracing::warn!(error = %io::Error::last_os_error(), "SO_TIMESTAMPNS not available: no overload detection");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = s;
}

/// A worker's private, non-blocking UDP socket (no SO_REUSEPORT: only this worker reads it).
pub fn udp_private(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// A listening, non-blocking TCP socket with SO_REUSEPORT.
pub fn tcp_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = base(addr, Type::STREAM, Protocol::TCP)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// The open-file limit before and after [`raise_open_files`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFiles {
    /// Soft limit found at start.
    pub before: u64,
    /// Soft limit now.
    pub soft: u64,
    /// Hard limit now.
    pub hard: u64,
}

/// The kernel's per-process ceiling for an unlimited hard limit (`fs.nr_open`).
#[cfg(unix)]
fn nr_open() -> u64 {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20)
}

#[cfg(unix)]
fn get_nofile() -> io::Result<libc::rlimit> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } == 0 {
        Ok(rl)
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(unix)]
fn set_nofile(soft: u64, hard: u64) -> io::Result<()> {
    let rl = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: `rl` is a valid rlimit; the kernel only reads it.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets the soft open-file limit to `want`, or to the hard limit when `want` is 0 (an
/// unlimited hard limit means the kernel's `fs.nr_open`). A `want` above the hard limit
/// raises the hard limit too, which needs privilege; if that is refused the soft limit is
/// raised to the hard limit instead and the refusal is returned with what was set.
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not everywhere
pub fn raise_open_files(want: u64) -> Result<OpenFiles, (io::Error, OpenFiles)> {
    let unknown = OpenFiles {
        before: 0,
        soft: 0,
        hard: 0,
    };
    let rl = get_nofile().map_err(|e| (e, unknown))?;
    let (before, hard) = (rl.rlim_cur as u64, rl.rlim_max as u64);
    let ceiling = if rl.rlim_max == libc::RLIM_INFINITY {
        nr_open()
    } else {
        hard
    };
    let now = |before| {
        get_nofile().map_or(unknown, |r| OpenFiles {
            before,
            soft: r.rlim_cur as u64,
            hard: r.rlim_max as u64,
        })
    };
    let target = if want == 0 { ceiling } else { want };
    if target == before {
        return Ok(now(before));
    }
    if target <= ceiling {
        return match set_nofile(target, hard) {
            Ok(()) => Ok(now(before)),
            Err(e) => Err((e, now(before))),
        };
    }
    match set_nofile(target, target) {
        Ok(()) => Ok(now(before)),
        Err(e) => {
            let _ = set_nofile(ceiling, hard);
            Err((e, now(before)))
        }
    }
}

/// Not Unix: nothing to set.
#[cfg(not(unix))]
pub fn raise_open_files(_want: u64) -> Result<OpenFiles, (io::Error, OpenFiles)> {
    Ok(OpenFiles {
        before: 0,
        soft: 0,
        hard: 0,
    })
}

/// This process's hold on a listen address (see the module docs); dropping it lets another
/// instance start on the address once our sockets are closed too.
#[derive(Debug)]
pub struct AddrLock {
    #[cfg(target_os = "linux")]
    _lock: std::os::unix::net::UnixDatagram,
}

/// Makes sure no other process serves `transport:addr`, before our reuseport sockets are
/// bound, and holds the address for this process. `Err` with `AddrInUse` if another process
/// holds it; other errors are those the real bind would meet (permission, no such address).
/// `Ok(None)` for port 0.
pub fn claim(transport: Transport, addr: SocketAddr) -> io::Result<Option<AddrLock>> {
    if addr.port() == 0 {
        return Ok(None);
    }
    let lock = lock(transport, addr)?;
    let probe = match transport {
        Transport::Udp => Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?,
        Transport::Tcp => {
            let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
            s.set_reuse_address(true)?;
            s
        }
    };
    if addr.is_ipv6() {
        probe.set_only_v6(true)?;
    }
    probe.bind(&addr.into())?;
    drop(probe);
    Ok(Some(lock))
}

/// The abstract UNIX socket `\0sipedge-<transport>-<addr>`; `AddrInUse` if another process
/// has it.
#[cfg(target_os = "linux")]
fn lock(transport: Transport, addr: SocketAddr) -> io::Result<AddrLock> {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("sipedge-{}-{addr}", transport.as_str());
    let at = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    let s = std::os::unix::net::UnixDatagram::bind_addr(&at)?;
    Ok(AddrLock { _lock: s })
}

/// Not Linux: no abstract sockets; the probe alone decides.
#[cfg(not(target_os = "linux"))]
fn lock(_transport: Transport, _addr: SocketAddr) -> io::Result<AddrLock> {
    Ok(AddrLock {})
}

/// Attach the "random worker among the first `n`" classic BPF program to a reuseport group
/// (attaching to one socket of the group applies to the whole group and replaces the previous
/// program atomically). `n` ≤ 1 selects worker 0 only.
#[cfg(target_os = "linux")]
pub fn spread_over(sock: &std::net::UdpSocket, n: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SKF_AD_OFF + SKF_AD_RANDOM: a random u32 into A; A %= n; return A (A %= 1 is 0).
    let n = n.max(1);
    const SKF_AD_OFF: i32 = -0x1000;
    const SKF_AD_RANDOM: i32 = 56;
    let mut prog = [
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: (SKF_AD_OFF + SKF_AD_RANDOM) as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: n,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_A) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at a live, correctly sized filter array for the duration of
    // the call; the kernel copies it.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Not Linux: the kernel's own reuseport hash is used.
#[cfg(not(target_os = "linux"))]
pub fn spread_over(_sock: &std::net::UdpSocket, _n: u32) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure
mod tests {
    use super::*;

    /// A port no one holds now (bound to 0 and released).
    fn free(t: Transport) -> SocketAddr {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        match t {
            Transport::Udp => std::net::UdpSocket::bind(any)
                .unwrap()
                .local_addr()
                .unwrap(),
            Transport::Tcp => std::net::TcpListener::bind(any)
                .unwrap()
                .local_addr()
                .unwrap(),
        }
    }

    #[test]
    fn claim_refuses_an_address_held_through_reuseport() {
        for t in [Transport::Udp, Transport::Tcp] {
            let addr = free(t);
            let lock = claim(t, addr).unwrap().expect("a real port is locked");
            // Our own reuseport sockets bind after the claim, as in `run::start`.
            let held = match t {
                Transport::Udp => (Some(udp(addr).unwrap()), None),
                Transport::Tcp => (None, Some(tcp_listener(addr).unwrap())),
            };
            // A second instance: the lock says no.
            let e = claim(t, addr).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{t:?}");
            // Another process without our lock (an older sipedge, anything else): the probe.
            drop(lock);
            let e = claim(t, addr).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{t:?}");
            // Once the sockets are closed the address is free again.
            drop(held);
            assert!(claim(t, addr).unwrap().is_some(), "{t:?}");
        }
    }

    #[test]
    fn claim_sees_overlapping_wildcards_and_skips_port_zero() {
        let addr = free(Transport::Udp);
        let wild = SocketAddr::from(([0, 0, 0, 0], addr.port()));
        let _held = udp(wild).unwrap();
        let e = claim(Transport::Udp, addr).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        let zero = SocketAddr::from(([127, 0, 0, 1], 0));
        assert!(claim(Transport::Udp, zero).unwrap().is_none());
        // The other transport on the same port is someone else's business.
        if let Ok(l) = std::net::TcpListener::bind(addr) {
            drop(l);
            assert!(claim(Transport::Tcp, addr).is_ok());
        }
    }

    #[test]
    fn open_file_limit_is_set_and_reported() {
        let start = raise_open_files(0).unwrap();
        assert_eq!(start.soft, start.hard.min(nr_open()), "{start:?}");
        // A lower soft limit is set exactly, and the hard limit is kept...
        let low = start.hard.clamp(256, 4096).min(start.hard);
        let l = raise_open_files(low).unwrap();
        assert_eq!((l.soft, l.hard), (low, start.hard));
        // ...and 0 brings it back up to the hard limit.
        let back = raise_open_files(0).unwrap();
        assert_eq!((back.before, back.soft), (low, start.soft));
        // Above the hard limit: refused without privilege, and the soft limit ends at the
        // hard one either way.
        if start.hard < nr_open() {
            match raise_open_files(start.hard + 1) {
                Ok(r) => assert_eq!(r.soft, start.hard + 1),
                Err((_, r)) => assert_eq!(r.soft, start.hard),
            }
        }
    }

    #[test]
    fn tcp_time_wait_does_not_count() {
        let addr = free(Transport::Tcp);
        let l = tcp_listener(addr).unwrap();
        l.set_nonblocking(false).unwrap();
        let c = std::net::TcpStream::connect(addr).unwrap();
        let (a, _) = l.accept().unwrap();
        drop(a); // the server side closes first: its end goes to TIME_WAIT
        drop(c);
        drop(l);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(claim(Transport::Tcp, addr).unwrap().is_some());
    }
}
