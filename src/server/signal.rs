//! SIGTERM and SIGINT as a readable pipe the event loop polls (the self-pipe trick), so a
//! signal wakes the loop instead of being noticed at the next timeout.

#![allow(unsafe_code)] // SAFETY: each unsafe block below says why it is sound.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicI32, Ordering};

use mio::unix::pipe;

static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(_signum: libc::c_int) {
    let fd = WAKE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = 1u8;
        // write(2) is async-signal-safe and the buffer is a valid one-byte local. A full pipe
        // (EAGAIN) means a wake-up is already pending, so the result can be ignored.
        let _ = unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) }; // SAFETY: see above
    }
}

/// The read end of the signal pipe; register it with the poll and call `drain` when readable.
pub struct Signals {
    receiver: pipe::Receiver,
    _sender: pipe::Sender,
}

impl Signals {
    /// Installs handlers for SIGTERM and SIGINT.
    pub fn install() -> io::Result<Signals> {
        let (sender, receiver) = pipe::new()?;
        WAKE_FD.store(sender.as_raw_fd(), Ordering::Relaxed);
        for signum in [libc::SIGTERM, libc::SIGINT] {
            // sigaction is a plain C struct for which all zeroes is a valid value; the mask and
            // the action passed below are ours and valid; the handler only touches an atomic and
            // calls write(2), both async-signal-safe.
            let mut action: libc::sigaction = unsafe { std::mem::zeroed() }; // SAFETY: see above
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            unsafe { libc::sigemptyset(&mut action.sa_mask) }; // SAFETY: see above
            let rc = unsafe { libc::sigaction(signum, &action, std::ptr::null_mut()) }; // SAFETY: see above
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(Signals {
            receiver,
            _sender: sender,
        })
    }

    pub fn source(&mut self) -> &mut pipe::Receiver {
        &mut self.receiver
    }

    /// Empties the pipe; true if a signal had arrived.
    pub fn drain(&mut self) -> bool {
        let mut buf = [0u8; 64];
        let mut got = false;
        loop {
            match self.receiver.read(&mut buf) {
                Ok(0) => return got,
                Ok(_) => got = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return got,
            }
        }
    }
}
