//! TCP transport for loadgen workers: one connection per UAC "socket" to the target, and a
//! `SO_REUSEPORT` listener per worker on the UAS side. Messages are framed by
//! `Content-Length` (see [`crate::sipmsg::frame_len`]).
//!
//! Invariants:
//! - Socket index `i` in `Transmit::sock` is the index into `conns`: `0..n_uac` are the UAC's
//!   connections, the rest are accepted UAS connections (slots of closed ones are reused).
//!   A UAS reply therefore goes back on the connection the request came in on.
//! - Everything the UAC sends on socket `i` (initial and in-dialog requests) uses connection
//!   `i`, whatever the destination address: through a proxy the first hop is the target.
//! - Reads and writes are non-blocking; unsent bytes wait in the connection's write buffer
//!   and `POLLOUT` is requested while it is non-empty. Buffers are reused, not reallocated.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};

use super::{BATCH, Core, IoError, RunConfig, Shared, now_us, sleep_until, tight_timer_slack};
use crate::outbox::Outbox;
use crate::sipmsg;

/// Opens a connection from `local_ip` to `target`.
pub(crate) fn connect(local_ip: IpAddr, target: SocketAddr) -> Result<TcpStream, IoError> {
    let err = |source| IoError::Socket {
        addr: target,
        source,
    };
    let s = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )
    .map_err(err)?;
    s.bind(&SocketAddr::new(local_ip, 0).into()).map_err(err)?;
    s.connect(&target.into()).map_err(err)?;
    s.set_tcp_nodelay(true).map_err(err)?;
    s.set_nonblocking(true).map_err(err)?;
    Ok(s.into())
}

/// A non-blocking `SO_REUSEPORT` listener on `addr`.
pub(crate) fn listen(addr: SocketAddr) -> Result<TcpListener, IoError> {
    let err = |source| IoError::Socket { addr, source };
    let s =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    s.set_reuse_address(true).map_err(err)?;
    s.set_reuse_port(true).map_err(err)?;
    s.bind(&addr.into()).map_err(err)?;
    s.listen(1024).map_err(err)?;
    s.set_nonblocking(true).map_err(err)?;
    Ok(s.into())
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    open: bool,
}

impl Conn {
    fn new(stream: TcpStream, peer: SocketAddr) -> Conn {
        Conn {
            stream,
            peer,
            rbuf: Vec::with_capacity(1 << 16),
            wbuf: Vec::with_capacity(1 << 16),
            open: true,
        }
    }

    /// Writes as much of the write buffer as the socket takes now.
    fn push_out(&mut self) {
        let mut done = 0;
        while done < self.wbuf.len() {
            match self.stream.write(self.wbuf.get(done..).unwrap_or(&[])) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.open = false;
                    break;
                }
            }
        }
        self.wbuf.drain(..done);
    }
}

/// A worker whose transport is TCP.
pub(crate) struct TcpWorker {
    core: Core,
    conns: Vec<Conn>,
    n_uac: usize,
    listener: Option<TcpListener>,
}

fn write_out(conns: &mut [Conn], out: &mut Outbox) {
    for t in &out.items {
        if let Some(c) = conns.get_mut(usize::from(t.sock))
            && c.open
        {
            c.wbuf.extend_from_slice(out.bytes(t));
        }
    }
    out.clear();
    for c in conns.iter_mut().filter(|c| c.open && !c.wbuf.is_empty()) {
        c.push_out();
    }
}

impl TcpWorker {
    /// A worker with its UAC connections and (UAS role) listener.
    pub(crate) fn new(core: Core, uac: Vec<TcpStream>, listener: Option<TcpListener>) -> Self {
        let n_uac = uac.len();
        let conns = uac
            .into_iter()
            .map(|s| {
                let peer = s
                    .peer_addr()
                    .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                Conn::new(s, peer)
            })
            .collect();
        TcpWorker {
            core,
            conns,
            n_uac,
            listener,
        }
    }

    /// Runs until the core says the worker is finished.
    pub(crate) fn run(self, cfg: &RunConfig, sh: &Shared) {
        tight_timer_slack();
        let TcpWorker {
            mut core,
            mut conns,
            n_uac,
            listener,
        } = self;
        let mut out = Outbox::with_capacity(BATCH * 4);
        let mut pfds: Vec<libc::pollfd> = Vec::new();
        let mut tmp = vec![0u8; 1 << 16];
        loop {
            if let Some(l) = &listener {
                while let Ok((st, peer)) = l.accept() {
                    let _ = st.set_nonblocking(true);
                    let _ = st.set_nodelay(true);
                    let c = Conn::new(st, peer);
                    match conns.iter().skip(n_uac).position(|c| !c.open) {
                        Some(j) => {
                            if let Some(slot) = conns.get_mut(n_uac + j) {
                                *slot = c;
                            }
                        }
                        None if conns.len() < usize::from(u16::MAX) => conns.push(c),
                        None => {}
                    }
                }
            }
            for i in 0..conns.len() {
                let Some(c) = conns.get_mut(i) else { break };
                if !c.open {
                    continue;
                }
                loop {
                    match c.stream.read(&mut tmp) {
                        Ok(0) => {
                            c.open = false;
                            break;
                        }
                        Ok(n) => {
                            c.rbuf.extend_from_slice(tmp.get(..n).unwrap_or(&[]));
                            if n < tmp.len() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(_) => {
                            c.open = false;
                            break;
                        }
                    }
                }
                let now = now_us(sh.t0);
                let mut off = 0;
                while let Some(len) = sipmsg::frame_len(c.rbuf.get(off..).unwrap_or(&[])) {
                    let frame = c.rbuf.get(off..off + len).unwrap_or(&[]);
                    if !frame.iter().all(|b| matches!(b, b'\r' | b'\n')) {
                        core.handle(now, i >= n_uac, i as u16, c.peer, frame, &mut out);
                    }
                    off += len;
                }
                c.rbuf.drain(..off);
                if out.len() >= BATCH {
                    write_out(&mut conns, &mut out);
                }
            }
            let Some(wake) = core.tick(cfg, sh, &mut out, &mut |o| write_out(&mut conns, o)) else {
                return;
            };
            pfds.clear();
            if let Some(l) = &listener {
                pfds.push(libc::pollfd {
                    fd: l.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            for c in conns.iter().filter(|c| c.open) {
                let mut events = libc::POLLIN;
                if !c.wbuf.is_empty() {
                    events |= libc::POLLOUT;
                }
                pfds.push(libc::pollfd {
                    fd: c.stream.as_raw_fd(),
                    events,
                    revents: 0,
                });
            }
            sleep_until(sh, wake, &mut pfds);
        }
    }
}
