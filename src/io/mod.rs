//! The only code that touches sockets, threads and the real clock.
