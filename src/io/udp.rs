//! Batched UDP receive and send (`recvmmsg`/`sendmmsg` on Linux, one datagram per call
//! elsewhere), over preallocated buffers.
//!
//! Invariants: buffers are allocated once per worker; a batch never allocates; every
//! `unsafe` block is a plain syscall over memory this module owns, sized by its own arrays.

use std::io;
use std::net::SocketAddr;

use mio::net::UdpSocket;

use crate::engine::{Output, Transmit};
use crate::wire::Transport;

/// Datagrams per batch.
pub const BATCH: usize = 32;
/// Largest datagram we accept.
pub const MAX_DATAGRAM: usize = 65_535;

/// Preallocated receive batch.
pub struct RecvBatch {
    bufs: Vec<u8>,
    lens: [usize; BATCH],
    addrs: [Option<SocketAddr>; BATCH],
    n: usize,
    #[cfg(target_os = "linux")]
    storage: Box<[libc::sockaddr_storage; BATCH]>,
    /// Control buffers (receive timestamps), one per datagram.
    #[cfg(target_os = "linux")]
    control: Box<[[u64; CONTROL_WORDS]; BATCH]>,
    /// Kernel receive time of the first (oldest) datagram of the batch, ns since the Unix
    /// epoch (0 = not stamped).
    first_rx_ns: u64,
    /// `recvmmsg` iovecs and headers, pointing into `bufs`, `storage` and `control` (heap
    /// memory that never moves): set up once, not zeroed and rebuilt on every receive.
    #[cfg(target_os = "linux")]
    iov: Box<[libc::iovec; BATCH]>,
    #[cfg(target_os = "linux")]
    hdrs: Box<[libc::mmsghdr; BATCH]>,
}

/// Control buffer size per datagram, in u64 words (room for one `timespec` cmsg).
#[cfg(target_os = "linux")]
const CONTROL_WORDS: usize = 8;

impl Default for RecvBatch {
    fn default() -> Self {
        #[allow(unused_mut)] // mutated on Linux only
        let mut b = RecvBatch {
            bufs: vec![0; BATCH * MAX_DATAGRAM],
            lens: [0; BATCH],
            addrs: [None; BATCH],
            n: 0,
            #[cfg(target_os = "linux")]
            // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
            storage: Box::new(unsafe { std::mem::zeroed() }),
            #[cfg(target_os = "linux")]
            control: Box::new([[0; CONTROL_WORDS]; BATCH]),
            first_rx_ns: 0,
            #[cfg(target_os = "linux")]
            // SAFETY: zeroed arrays of plain C structs are valid values.
            iov: Box::new(unsafe { std::mem::zeroed() }),
            #[cfg(target_os = "linux")]
            // SAFETY: as above.
            hdrs: Box::new(unsafe { std::mem::zeroed() }),
        };
        #[cfg(target_os = "linux")]
        {
            let base = b.bufs.as_mut_ptr();
            for (i, ((iov, h), (st, ctl))) in b
                .iov
                .iter_mut()
                .zip(b.hdrs.iter_mut())
                .zip(b.storage.iter_mut().zip(b.control.iter_mut()))
                .enumerate()
            {
                // SAFETY: i * MAX_DATAGRAM + MAX_DATAGRAM <= bufs.len() by construction.
                iov.iov_base = unsafe { base.add(i * MAX_DATAGRAM) }.cast();
                iov.iov_len = MAX_DATAGRAM;
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                h.msg_hdr.msg_name = (st as *mut libc::sockaddr_storage).cast();
                h.msg_hdr.msg_control = ctl.as_mut_ptr().cast();
            }
        }
        b
    }
}

impl RecvBatch {
    /// Number of datagrams in the batch.
    pub fn len(&self) -> usize {
        self.n
    }
    /// Is the batch empty?
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    /// Kernel receive time of the batch's first datagram, ns since the Unix epoch; `None` when
    /// the socket does not stamp (see `socket::udp`).
    pub fn first_rx_ns(&self) -> Option<u64> {
        (self.first_rx_ns != 0).then_some(self.first_rx_ns)
    }

    /// Datagram `i`: source and bytes.
    pub fn get(&self, i: usize) -> Option<(SocketAddr, &[u8])> {
        let addr = (*self.addrs.get(i)?)?;
        let start = i * MAX_DATAGRAM;
        let len = *self.lens.get(i)?;
        Some((addr, self.bufs.get(start..start + len)?))
    }

    /// Receive up to [`BATCH`] datagrams. `Ok(0)` never happens: an empty socket is
    /// `WouldBlock`.
    #[cfg(target_os = "linux")]
    pub fn recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        // The kernel writes back the name and control lengths and the flags: reset them.
        for h in self.hdrs.iter_mut() {
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            h.msg_hdr.msg_controllen = std::mem::size_of::<[u64; CONTROL_WORDS]>() as _;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: hdrs holds BATCH headers set up in `default`, pointing into buffers owned
        // by `self` (heap memory that outlives the call) with those buffers' lengths.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for ((len, addr), (h, st)) in self
            .lens
            .iter_mut()
            .zip(self.addrs.iter_mut())
            .zip(self.hdrs.iter().zip(self.storage.iter()))
            .take(n)
        {
            *len = h.msg_len as usize;
            *addr = sockaddr_to(st);
        }
        self.n = n;
        self.first_rx_ns = self.hdrs.first().map_or(0, |h| rx_timestamp_ns(&h.msg_hdr));
        Ok(n)
    }

    /// Receive one datagram (portable fallback).
    #[cfg(not(target_os = "linux"))]
    pub fn recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        let (len, addr) = sock.recv_from(&mut self.bufs[..MAX_DATAGRAM])?;
        self.lens[0] = len;
        self.addrs[0] = Some(addr);
        self.n = 1;
        Ok(1)
    }
}

/// The SO_TIMESTAMPNS stamp of a received message, ns since the Unix epoch (0 = none).
#[cfg(target_os = "linux")]
#[allow(clippy::unnecessary_cast)] // msg_controllen is usize on glibc, u32 on musl
fn rx_timestamp_ns(h: &libc::msghdr) -> u64 {
    if h.msg_control.is_null() || (h.msg_controllen as usize) < std::mem::size_of::<libc::cmsghdr>()
    {
        return 0;
    }
    // SAFETY: msg_control points at this batch's control buffer and the kernel set
    // msg_controllen to the bytes it wrote there; CMSG_FIRSTHDR/NXTHDR stay inside it.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                return (ts.tv_sec as u64)
                    .saturating_mul(1_000_000_000)
                    .saturating_add(ts.tv_nsec as u64);
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    0
}

#[cfg(target_os = "linux")]
fn sockaddr_to(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a: &libc::sockaddr_in = unsafe { &*(s as *const _ as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::new(ip.into(), u16::from_be(a.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a: &libc::sockaddr_in6 = unsafe { &*(s as *const _ as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::new(ip.into(), u16::from_be(a.sin6_port)))
        }
        _ => None,
    }
}

#[cfg(target_os = "linux")]
fn sockaddr_from(a: &SocketAddr, s: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match a {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin: &mut libc::sockaddr_in =
                unsafe { &mut *(s as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
            sin.sin_zero = [0; 8];
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(v6) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let sin6: &mut libc::sockaddr_in6 =
                unsafe { &mut *(s as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = v6.port().to_be();
            sin6.sin6_addr.s6_addr = v6.ip().octets();
            sin6.sin6_flowinfo = 0;
            sin6.sin6_scope_id = v6.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Preallocated `sendmmsg` headers, addresses and iovecs, zeroed once per worker: a send
/// overwrites only the fields and entries it uses (zeroing the arrays on every flush cost about
/// 50,000 instructions per call at low rates, measured with callgrind).
#[cfg(target_os = "linux")]
pub struct SendBatch {
    iov: Box<[libc::iovec; BATCH]>,
    hdrs: Box<[libc::mmsghdr; BATCH]>,
    names: Box<[libc::sockaddr_storage; BATCH]>,
}

#[cfg(target_os = "linux")]
impl Default for SendBatch {
    fn default() -> Self {
        // SAFETY: zeroed arrays of plain C structs are valid values.
        unsafe {
            SendBatch {
                iov: Box::new(std::mem::zeroed()),
                hdrs: Box::new(std::mem::zeroed()),
                names: Box::new(std::mem::zeroed()),
            }
        }
    }
}

/// Send batch of the portable fallback (one `send_to` per datagram needs no buffers).
#[cfg(not(target_os = "linux"))]
#[derive(Default)]
pub struct SendBatch;

#[cfg(target_os = "linux")]
impl SendBatch {
    /// Send every UDP transmit of `out` that `mine` selects from `sock`, in batches.
    /// Returns how many were handed to the kernel; failures (e.g. a full buffer) are dropped,
    /// as UDP may drop them anyway, and counted by the caller.
    pub fn send(
        &mut self,
        sock: &UdpSocket,
        out: &Output,
        mine: impl Fn(&Transmit) -> bool,
    ) -> usize {
        use std::os::fd::AsRawFd;
        let mut sent = 0;
        let mut it = out
            .tx
            .iter()
            .filter(|t| t.transport == Transport::Udp && mine(t))
            .peekable();
        while it.peek().is_some() {
            let mut n = 0;
            for (t, ((iov, h), name)) in it.by_ref().zip(
                self.iov
                    .iter_mut()
                    .zip(self.hdrs.iter_mut())
                    .zip(self.names.iter_mut()),
            ) {
                let bytes = out.bytes(t);
                let len = sockaddr_from(&t.dst, name);
                iov.iov_base = bytes.as_ptr() as *mut libc::c_void;
                iov.iov_len = bytes.len();
                // Every field sendmmsg reads is set here (control and flags stay zero from
                // construction; the kernel writes only msg_len).
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                h.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
                h.msg_hdr.msg_namelen = len;
                h.msg_len = 0;
                n += 1;
            }
            let mut off = 0;
            while off < n {
                // SAFETY: hdrs[off..n] were initialised above and point into `out.buf`, `iov`
                // and `names`, which all outlive the call; n <= BATCH.
                let r = unsafe {
                    libc::sendmmsg(
                        sock.as_raw_fd(),
                        self.hdrs.as_mut_ptr().add(off),
                        (n - off) as u32,
                        libc::MSG_DONTWAIT,
                    )
                };
                if r <= 0 {
                    // Skip one failing datagram (unreachable, buffer full) and go on.
                    off += 1;
                    continue;
                }
                off += r as usize;
                sent += r as usize;
            }
        }
        sent
    }
}

#[cfg(not(target_os = "linux"))]
impl SendBatch {
    /// Send every UDP transmit of `out` that `mine` selects from `sock` (portable fallback).
    pub fn send(
        &mut self,
        sock: &UdpSocket,
        out: &Output,
        mine: impl Fn(&Transmit) -> bool,
    ) -> usize {
        out.tx
            .iter()
            .filter(|t| t.transport == Transport::Udp && mine(t))
            .filter(|t| sock.send_to(out.bytes(t), t.dst).is_ok())
            .count()
    }
}
