//! `pubsub-counting`: the pubsub server with a counting allocator, for the benchmark's
//! allocations-per-delivery figure (`allocations` in `/stats`). It is the server's own library
//! and configuration; only the allocator differs, and it lives here so no production build
//! carries it.
#![deny(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

struct Counting;

// Every method forwards to `System` with exactly the arguments it was given, so it upholds
// `GlobalAlloc`'s contract whenever `System` does; counting has no effect on memory. (Kept
// unformatted so each `unsafe` line carries its SAFETY note.)
#[rustfmt::skip]
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting { // SAFETY: forwards to System, see above
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 { // SAFETY: caller's contract, forwarded
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) } // SAFETY: the caller's layout, unchanged
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) { // SAFETY: caller's contract, forwarded
        unsafe { System.dealloc(ptr, layout) } // SAFETY: `ptr` came from alloc/realloc with `layout`
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 { // SAFETY: forwarded
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) } // SAFETY: the caller's arguments, unchanged
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn main() -> ExitCode {
    pubsub::stats::count_allocations_with(|| ALLOCATIONS.load(Ordering::Relaxed));
    match pubsub::config::Config::from_env() {
        Ok(config) => pubsub::server::serve(config),
        Err(e) => {
            eprintln!("pubsub-counting: {e}");
            ExitCode::from(2)
        }
    }
}
