//! A no-op UDP relay: the physical floor for the side-by-side proxy benchmark.
//!
//! Every datagram that arrives on the listen socket goes unchanged to one fixed target through
//! a second (upstream) socket; every datagram that arrives on the upstream socket goes back to
//! the last client address seen on the listen socket. That is enough for SIP when the callee
//! replies to the source address (loadgen's UAS does) and in-dialog requests go to the Contact
//! (no Record-Route here), so it measures what the kernel's UDP path costs per datagram with
//! no parsing at all.
//!
//! Invariants: one thread, `recvmmsg`/`sendmmsg` batches of [`BATCH`], no allocation after
//! start-up. On SIGTERM/SIGINT it prints `relay: datagrams=N` (both directions) and exits, so a
//! script can divide the process CPU by N.
//!
//! Usage: `cargo run --release --example udp_relay -- 127.0.0.1:5060 127.0.0.1:5090`
#![allow(clippy::print_stderr)]

use std::io;
use std::mem::MaybeUninit;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Datagrams per `recvmmsg`/`sendmmsg` call.
const BATCH: usize = 64;
/// Largest datagram relayed.
const MTU: usize = 65_535;

/// Reused receive/send batch: buffers, iovecs, headers and source addresses.
struct Batch {
    bufs: Vec<u8>,
    iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    addrs: Vec<libc::sockaddr_in>,
}

impl Batch {
    fn new() -> Box<Batch> {
        // SAFETY: all-zero bytes are a valid `sockaddr_in`, `iovec` (null, 0) and `mmsghdr`.
        let zero_addr: libc::sockaddr_in = unsafe { MaybeUninit::zeroed().assume_init() };
        let mut b = Box::new(Batch {
            bufs: vec![0u8; BATCH * MTU],
            iov: Vec::with_capacity(BATCH),
            // SAFETY: as above.
            hdrs: (0..BATCH)
                .map(|_| unsafe { MaybeUninit::zeroed().assume_init() })
                .collect(),
            addrs: vec![zero_addr; BATCH],
        });
        let base = b.bufs.as_mut_ptr();
        for i in 0..BATCH {
            b.iov.push(libc::iovec {
                // SAFETY: `i * MTU` is inside the `BATCH * MTU` buffer.
                iov_base: unsafe { base.add(i * MTU) }.cast(),
                iov_len: MTU,
            });
        }
        b
    }

    /// Points header `i` at buffer `i` with length `len` and address slot `i`.
    fn arm(&mut self, i: usize, len: usize) {
        let iov: *mut libc::iovec = &mut self.iov[i];
        let addr: *mut libc::sockaddr_in = &mut self.addrs[i];
        self.iov[i].iov_len = len;
        let h = &mut self.hdrs[i].msg_hdr;
        h.msg_name = addr.cast();
        h.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        h.msg_iov = iov;
        h.msg_iovlen = 1;
        h.msg_control = std::ptr::null_mut();
        h.msg_controllen = 0;
        h.msg_flags = 0;
    }

    /// Receives up to [`BATCH`] datagrams without blocking; returns how many.
    fn recv(&mut self, fd: i32) -> usize {
        for i in 0..BATCH {
            self.arm(i, MTU);
        }
        // SAFETY: `hdrs` holds BATCH headers whose iovecs and names point into `self`, which
        // outlives the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        usize::try_from(n).unwrap_or(0)
    }

    /// Sends the first `n` received datagrams on `fd`, each to `dst` (or back to the address
    /// it came from when `dst` is `None`). Returns how many went out.
    fn send(&mut self, fd: i32, n: usize, dst: Option<&libc::sockaddr_in>) -> usize {
        for i in 0..n {
            let len = self.hdrs[i].msg_len as usize;
            self.arm(i, len);
            if let Some(d) = dst {
                self.addrs[i] = *d;
            }
        }
        let mut done = 0;
        while done < n {
            // SAFETY: headers `done..n` were armed above and point into `self`.
            let r = unsafe {
                libc::sendmmsg(fd, self.hdrs.as_mut_ptr().add(done), (n - done) as u32, 0)
            };
            match usize::try_from(r) {
                Ok(k) if k > 0 => done += k,
                _ => break, // drop the rest, like a full socket buffer would
            }
        }
        done
    }
}

fn to_sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: all-zero bytes are a valid `sockaddr_in`.
    let mut s: libc::sockaddr_in = unsafe { MaybeUninit::zeroed().assume_init() };
    s.sin_family = libc::AF_INET as libc::sa_family_t;
    s.sin_port = a.port().to_be();
    s.sin_addr.s_addr = u32::from(*a.ip()).to_be();
    s
}

fn v4(s: &str) -> io::Result<SocketAddrV4> {
    match s.parse::<SocketAddr>() {
        Ok(SocketAddr::V4(a)) => Ok(a),
        _ => Err(io::Error::other(format!("{s:?}: want IPv4 ADDR:PORT"))),
    }
}

fn big_buffers(fd: i32) {
    let size: libc::c_int = 8 << 20;
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: `size` is a valid c_int that outlives the call.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(target)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: udp_relay LISTEN_ADDR:PORT TARGET_ADDR:PORT");
        std::process::exit(2);
    };
    let (listen, target) = (v4(listen)?, v4(target)?);
    let down = UdpSocket::bind(listen)?;
    let up = UdpSocket::bind("127.0.0.1:0")?;
    let (dfd, ufd) = (down.as_raw_fd(), up.as_raw_fd());
    big_buffers(dfd);
    big_buffers(ufd);
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;

    let target = to_sockaddr(target);
    let mut client: Option<libc::sockaddr_in> = None;
    let mut batch = Batch::new();
    let mut total: u64 = 0;
    let mut fds = [
        libc::pollfd {
            fd: dfd,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: ufd,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    eprintln!("relay: {listen} -> {}", args[2]);
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: `fds` is a valid array of 2 pollfds.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, 100) };
        if r <= 0 {
            continue;
        }
        // Client -> target: drain until empty.
        loop {
            let n = batch.recv(dfd);
            if n == 0 {
                break;
            }
            // The last client address of the batch is the one replies go back to.
            client = batch.addrs.get(n - 1).copied();
            total += batch.send(ufd, n, Some(&target)) as u64;
        }
        // Target -> last client.
        loop {
            let n = batch.recv(ufd);
            if n == 0 {
                break;
            }
            if let Some(c) = client {
                total += batch.send(dfd, n, Some(&c)) as u64;
            }
        }
    }
    eprintln!("relay: datagrams={total}");
    Ok(())
}
