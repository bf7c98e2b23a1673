//! Socket set-up: one SO_REUSEPORT UDP socket (and TCP listener) per worker and listen
//! address, large buffers, and a reuseport BPF program that spreads datagrams at random over
//! the first `n` workers (`io::spread` chooses `n`), so load spreads even when every packet
//! comes from one peer address.
//!
//! Invariant: sockets of one address are created in worker order, so the BPF program's
//! return value `i` selects worker `i`'s socket.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

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
    s.bind(&addr.into())?;
    Ok(s.into())
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
