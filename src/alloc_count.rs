//! A counting allocator for performance study, compiled in only with the `count-allocations`
//! feature: it forwards to the system allocator and counts calls, so the benchmark can report
//! allocations per delivered message (`allocations` in `/stats`).
#![allow(unsafe_code)] // SAFETY: the impl only forwards to `System` with the caller's arguments.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

pub struct Counting;

/// Allocations (including reallocations) since start.
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

// Every method forwards to `System` with exactly the arguments it was given, so it upholds
// `GlobalAlloc`'s contract whenever `System` does; counting has no effect on memory. (Kept
// unformatted so each `unsafe` line carries its SAFETY note.)
#[rustfmt::skip]
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
