//! Per-category time profile of a model forward (issue 9: "guided by a per-kernel profile on the GPU"; nsys is
//! not available on the lent machines). When on, every [`scope`] synchronises the device when it opens and when
//! it closes, so the time it records is the GPU work (and the launch overhead) of the ops inside it alone.
//! Synchronising serialises the stream, so a profiled step is slower than an unprofiled one; `bench unet
//! --profile` prints both, and the table is for finding where time goes, not for absolute figures.
//!
//! Off (the default) a scope is one relaxed atomic load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use candle_core::Device;

static ON: AtomicBool = AtomicBool::new(false);
static TABLE: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

/// Accumulated time of one category.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub name: &'static str,
    pub calls: u64,
    pub ms: f64,
}

/// Turns profiling on or off process-wide.
pub fn enable(on: bool) {
    ON.store(on, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Clears the accumulated table.
pub fn reset() {
    if let Ok(mut t) = TABLE.lock() {
        t.clear();
    }
}

/// The accumulated table, largest time first.
pub fn table() -> Vec<Entry> {
    let mut t = TABLE.lock().map(|t| t.clone()).unwrap_or_default();
    t.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    t
}

/// An open profiling scope; records its time when dropped.
pub struct Scope {
    name: &'static str,
    device: Device,
    start: Instant,
}

/// Opens a scope named `name` on `device` when profiling is on (`None`, and no synchronisation, when off).
/// Scopes should not nest: a nested scope's time is counted in both.
pub fn scope(name: &'static str, device: &Device) -> Option<Scope> {
    if !enabled() {
        return None;
    }
    // A failed synchronisation only makes the figure less exact; the forward itself reports device errors.
    let _ = device.synchronize();
    Some(Scope { name, device: device.clone(), start: Instant::now() })
}

impl Drop for Scope {
    fn drop(&mut self) {
        let _ = self.device.synchronize();
        let ms = self.start.elapsed().as_secs_f64() * 1e3;
        if let Ok(mut t) = TABLE.lock() {
            match t.iter_mut().find(|e| e.name == self.name) {
                Some(e) => {
                    e.calls += 1;
                    e.ms += ms;
                }
                None => t.push(Entry { name: self.name, calls: 1, ms }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_accumulate_only_when_enabled() {
        // One test touches the process-wide table, so enable/reset cannot race with another test.
        let dev = Device::Cpu;
        reset();
        assert!(scope("off", &dev).is_none());
        enable(true);
        for _ in 0..3 {
            let _s = scope("conv", &dev);
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        drop(scope("norm", &dev));
        enable(false);
        let t = table();
        assert_eq!(t.len(), 2, "{t:?}");
        assert_eq!((t[0].name, t[0].calls), ("conv", 3));
        assert!(t[0].ms >= 6.0, "{t:?}");
        assert_eq!((t[1].name, t[1].calls), ("norm", 1));
        reset();
        assert!(table().is_empty());
    }
}
