//! What one input costs, measured so that a busy machine cannot make a check fail: memory by
//! counting allocations (exact and repeatable), time as the CPU time of the thread (not the
//! wall clock, so other processes on the machine do not count), checked against generous
//! ceilings.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

/// Counts the bytes each thread has allocated and not freed, and the peak of that count.
pub struct Counting;

thread_local! {
    // `const` and no destructor: usable from inside the allocator.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    static TOTAL: Cell<u64> = const { Cell::new(0) };
}

fn grew(bytes: usize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + bytes as isize;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
    let _ = TOTAL.try_with(|total| total.set(total.get() + bytes as u64));
}

fn shrank(bytes: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get() - bytes as isize));
}

// SAFETY: every call is passed on to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrank(layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grew(new_size);
        shrank(layout.size());
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// What running one input cost.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// Most bytes held at once above what was held before.
    pub peak_bytes: usize,
    /// Every byte allocated (a count of work that does not depend on the machine).
    pub allocated_bytes: u64,
    /// CPU time of the thread.
    pub cpu: Duration,
}

impl Usage {
    pub fn max(self, other: Usage) -> Usage {
        Usage {
            peak_bytes: self.peak_bytes.max(other.peak_bytes),
            allocated_bytes: self.allocated_bytes.max(other.allocated_bytes),
            cpu: self.cpu.max(other.cpu),
        }
    }
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill in.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `f` and measures it (measurements may nest).
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, Usage) {
    let live = LIVE.with(Cell::get);
    let outer_peak = PEAK.with(|p| p.replace(live));
    let total = TOTAL.with(Cell::get);
    let cpu = thread_cpu();
    let out = f();
    let peak = PEAK.with(|p| p.replace(p.get().max(outer_peak)));
    let usage = Usage {
        peak_bytes: (peak - live).max(0) as usize,
        allocated_bytes: TOTAL.with(Cell::get) - total,
        cpu: thread_cpu() - cpu,
    };
    (out, usage)
}

thread_local! {
    static WORST: Cell<Usage> = const {
        Cell::new(Usage {
            peak_bytes: 0,
            allocated_bytes: 0,
            cpu: Duration::ZERO,
        })
    };
}

/// Keeps the worst usage seen on this thread, for a target's summary.
pub fn note(usage: Usage) {
    WORST.with(|w| w.set(w.get().max(usage)));
}

/// The worst usage noted on this thread since the last call.
pub fn take_worst() -> Usage {
    WORST.with(|w| w.replace(Usage::default()))
}

/// The most one input may cost: a fixed allowance plus so much per byte of input.
#[derive(Clone, Copy, Debug)]
pub struct Ceiling {
    pub base_bytes: usize,
    pub bytes_per_input_byte: usize,
    pub cpu: Duration,
}

impl Ceiling {
    /// Whether `usage` for an input of `input_len` bytes stays under the ceiling; the error
    /// says which bound was passed.
    pub fn check(&self, input_len: usize, usage: Usage) -> Result<(), String> {
        note(usage);
        let bytes = self.base_bytes + self.bytes_per_input_byte * input_len;
        if usage.peak_bytes > bytes {
            return Err(format!(
                "held {} bytes at once for a {input_len}-byte input, more than the ceiling of {bytes}",
                usage.peak_bytes
            ));
        }
        if usage.cpu > self.cpu {
            return Err(format!(
                "took {:?} of CPU time, more than the ceiling of {:?}",
                usage.cpu, self.cpu
            ));
        }
        Ok(())
    }
}
