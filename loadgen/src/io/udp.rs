//! UDP transport for loadgen workers: `SO_REUSEPORT` sockets, `recvmmsg`/`sendmmsg` batches.
//!
//! Invariants:
//! - A worker's UAC sockets are indices `0..n` of its socket list; the UAS socket (if any)
//!   comes last. `Transmit::sock` is an index into that list.
//! - All buffers (`Batch`) are allocated once per worker; every `unsafe` block here is a
//!   plain libc call on buffers owned by the `Batch`, with its `// SAFETY:` note.
//! - Datagrams are timestamped after the receive that returned them.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::{BATCH, Core, IoError, RunConfig, Shared, now_us, sleep_until, tight_timer_slack};
use crate::outbox::Outbox;

pub(crate) fn udp_socket(addr: SocketAddr, reuseport: bool) -> Result<UdpSocket, IoError> {
    let err = |source| IoError::Socket { addr, source };
    let s =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    if reuseport {
        s.set_reuse_port(true).map_err(err)?;
    }
    // Large buffers absorb bursts; force variants need CAP_NET_ADMIN, so fall back quietly.
    for size in [8 << 20, 1 << 20] {
        if s.set_recv_buffer_size(size).is_ok() && s.recv_buffer_size().unwrap_or(0) >= size {
            break;
        }
    }
    let _ = s.set_send_buffer_size(4 << 20);
    s.set_nonblocking(true).map_err(err)?;
    s.bind(&addr.into()).map_err(err)?;
    Ok(s.into())
}

const BUF: usize = 4096;

/// Pre-allocated `recvmmsg`/`sendmmsg` state of one worker.
struct Batch {
    bufs: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    dsts: Vec<SockAddr>,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            bufs: vec![0u8; BATCH * BUF],
            // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs for which
            // all-zero bytes is a valid value.
            addrs: vec![unsafe { std::mem::zeroed() }; BATCH],
            iov: vec![unsafe { std::mem::zeroed() }; BATCH],
            hdrs: vec![unsafe { std::mem::zeroed() }; BATCH],
            dsts: Vec::with_capacity(BATCH),
        }
    }

    /// Receives up to BATCH datagrams; returns how many (0 on WouldBlock or error).
    fn recv(&mut self, fd: i32) -> usize {
        let base = self.bufs.as_mut_ptr();
        for i in 0..BATCH {
            // SAFETY: i*BUF + BUF <= bufs.len(), so the pointer stays inside the buffer.
            let p = unsafe { base.add(i * BUF) };
            self.iov[i] = libc::iovec {
                iov_base: p.cast(),
                iov_len: BUF,
            };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            h.msg_iov = &mut self.iov[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
        }
        // SAFETY: hdrs holds BATCH initialised headers pointing into buffers owned by self,
        // which outlive the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 { 0 } else { n as usize }
    }

    fn datagram(&self, i: usize) -> (Option<SocketAddr>, &[u8]) {
        let len = self.hdrs.get(i).map_or(0, |h| h.msg_len as usize).min(BUF);
        let bytes = self.bufs.get(i * BUF..i * BUF + len).unwrap_or(&[]);
        let addr = self.addrs.get(i).and_then(storage_to_addr);
        (addr, bytes)
    }

    /// Sends every queued datagram of socket index `sock` through `fd`.
    fn send(&mut self, fd: i32, sock: u16, out: &Outbox) -> usize {
        let mut sent = 0;
        let mut items = out.items.iter().filter(|t| t.sock == sock).peekable();
        while items.peek().is_some() {
            self.dsts.clear();
            let mut n = 0;
            let base = out.buf.as_ptr();
            for t in items.by_ref().take(BATCH) {
                self.dsts.push(SockAddr::from(t.dst));
                // SAFETY: start+len lies within out.buf (Outbox invariant).
                let p = unsafe { base.add(t.start as usize) };
                self.iov[n] = libc::iovec {
                    iov_base: p as *mut libc::c_void,
                    iov_len: t.len as usize,
                };
                n += 1;
            }
            for i in 0..n {
                let h = &mut self.hdrs[i].msg_hdr;
                h.msg_name = self.dsts[i].as_ptr() as *mut libc::c_void;
                h.msg_namelen = self.dsts[i].len();
                h.msg_iov = &mut self.iov[i];
                h.msg_iovlen = 1;
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
                h.msg_flags = 0;
            }
            let mut off = 0;
            let mut spins = 0;
            while off < n {
                // SAFETY: hdrs[off..n] are initialised and point at live buffers (out.buf,
                // self.dsts, self.iov) that are not touched until the call returns.
                let r = unsafe {
                    libc::sendmmsg(fd, self.hdrs.as_mut_ptr().add(off), (n - off) as u32, 0)
                };
                if r > 0 {
                    off += r as usize;
                    sent += r as usize;
                    continue;
                }
                let e = std::io::Error::last_os_error().raw_os_error();
                if e == Some(libc::EAGAIN) && spins < 1000 {
                    spins += 1;
                    let mut p = libc::pollfd {
                        fd,
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut p, 1, 1) };
                    continue;
                }
                off += 1; // drop this datagram (e.g. unreachable), keep going
            }
        }
        sent
    }
}

pub(crate) struct UdpWorker {
    pub(crate) core: Core,
    pub(crate) socks: Vec<UdpSocket>,
    pub(crate) uas_sock: Option<usize>,
}

impl UdpWorker {
    pub(crate) fn run(mut self, cfg: &RunConfig, sh: &Shared) {
        tight_timer_slack();
        let mut batch = Batch::new();
        let mut out = Outbox::with_capacity(BATCH * 4);
        let fds: Vec<i32> = self.socks.iter().map(|s| s.as_raw_fd()).collect();
        let mut pfds: Vec<libc::pollfd> = fds
            .iter()
            .map(|&fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: libc::POLLIN,
            })
            .collect();
        loop {
            let now = now_us(sh.t0);
            for (i, &fd) in fds.iter().enumerate() {
                // Only sockets that poll said are readable: saves empty recvmmsg calls.
                if pfds.get(i).is_some_and(|p| p.revents == 0) {
                    continue;
                }
                loop {
                    let n = batch.recv(fd);
                    // Timestamp after the receive: a datagram is never credited with an
                    // arrival earlier than the moment we had it in hand.
                    let now = if n > 0 { now_us(sh.t0) } else { now };
                    for k in 0..n {
                        if let (Some(src), bytes) = batch.datagram(k) {
                            let to_uas = Some(i) == self.uas_sock;
                            self.core
                                .handle(now, to_uas, i as u16, src, bytes, &mut out);
                        }
                    }
                    if out.len() >= BATCH {
                        flush(&mut batch, &fds, &mut out);
                    }
                    if n < BATCH {
                        break;
                    }
                }
            }
            let Some(wake) = self
                .core
                .tick(cfg, sh, &mut out, &mut |o| flush(&mut batch, &fds, o))
            else {
                return;
            };
            sleep_until(sh, wake, &mut pfds);
        }
    }
}

/// Decodes an IPv4/IPv6 `sockaddr_storage` filled in by the kernel.
fn storage_to_addr(a: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(a.ss_family) {
        libc::AF_INET => {
            // SAFETY: ss_family says this storage holds a sockaddr_in, which it is large and
            // aligned enough for.
            let v4 = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(v4.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let v6 = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(v6.sin6_addr.s6_addr);
            Some(SocketAddr::new(IpAddr::V6(ip), u16::from_be(v6.sin6_port)))
        }
        _ => None,
    }
}

fn flush(batch: &mut Batch, fds: &[i32], out: &mut Outbox) {
    if out.is_empty() {
        return;
    }
    for (i, &fd) in fds.iter().enumerate() {
        batch.send(fd, i as u16, out);
    }
    out.clear();
}
