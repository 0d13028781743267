//! A one-shot timer on the tool's poll, with the kernel's nanosecond resolution: mio rounds a
//! poll timeout up to whole milliseconds, so a rate paced by the timeout alone sends its
//! publishes in pairs at 2,000 a second whenever nothing else wakes the tool, and in how many
//! pairs depends on how often deliveries happen to wake it, which differs from run to run.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

pub struct Timer {
    fd: OwnedFd,
}

impl Timer {
    pub fn new(registry: &Registry, token: Token) -> io::Result<Timer> {
        // SAFETY: timerfd_create takes no pointers; a non-negative result is a descriptor we own.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` was just created and nothing else holds it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        registry.register(&mut SourceFd(&fd.as_raw_fd()), token, Interest::READABLE)?;
        Ok(Timer { fd })
    }

    /// Makes the poll wake `after` from now (at least a nanosecond: zero would disarm it),
    /// replacing any earlier arming.
    pub fn arm(&self, after: Duration) -> io::Result<()> {
        let after = after.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: `spec` is a valid itimerspec for the call's duration; the old value is not asked for.
        let rc =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads the expiry count, so the descriptor is not left readable between armings.
    pub fn clear(&self) {
        let mut expiries = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a buffer of 8; an error (nothing expired) is ignored.
        unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                expiries.as_mut_ptr().cast(),
                expiries.len(),
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};
    use std::time::Instant;

    #[test]
    fn wakes_the_poll_when_due_never_before() {
        let mut poll = Poll::new().unwrap();
        let mut events = Events::with_capacity(8);
        let timer = Timer::new(poll.registry(), Token(7)).unwrap();
        // Armed far off, then again sooner: the later arming is the one in force.
        timer.arm(Duration::from_secs(60)).unwrap();
        let start = Instant::now();
        timer.arm(Duration::from_millis(3)).unwrap();
        poll.poll(&mut events, Some(Duration::from_secs(20)))
            .unwrap();
        assert!(events.iter().any(|e| e.token() == Token(7)), "no wake");
        assert!(start.elapsed() >= Duration::from_millis(3), "woke early");
    }
}
