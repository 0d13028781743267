//! The one operating-system call mio does not offer: a larger listen backlog.
#![allow(unsafe_code)] // SAFETY: the single unsafe block below says why it is sound.

use std::io;
use std::os::fd::AsRawFd;

/// Connections the kernel may hold for `accept` (capped by net.core.somaxconn). mio listens
/// with 128, which a burst of connects overflows (the dropped SYNs are retried after a second).
pub const LISTEN_BACKLOG: i32 = 4096;

/// Calling listen(2) again on a listening socket sets its backlog anew.
pub fn set_listen_backlog(listener: &impl AsRawFd, backlog: i32) -> io::Result<()> {
    // listen(2) only reads its two integer arguments; the fd is owned by `listener`.
    let rc = unsafe { libc::listen(listener.as_raw_fd(), backlog) }; // SAFETY: see above
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
