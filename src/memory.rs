//! Checking that a request fits in memory before allocating it.
//!
//! A size typed wrong (`ingest --size 100000`, `train --widths 100000000,…`) would otherwise
//! ask the allocator for hundreds of gigabytes and the process would abort with no useful
//! message. Each command estimates the host memory its settings need (a lower bound from
//! the buffers whose size the settings fix) and compares it with what the machine can give:
//! the kernel's `MemAvailable`, or the cgroup limit of a container when that is smaller.
use std::fmt;

/// A request that does not fit.
#[derive(Debug, thiserror::Error)]
#[error("{what} needs at least {} of memory, but {} is available; {advice}", Bytes(*.need), Bytes(*.have))]
pub struct MemoryError {
    /// What needs the memory, with the setting that sizes it.
    pub what: String,
    /// Bytes needed.
    pub need: u128,
    /// Bytes available.
    pub have: u128,
    /// What to change.
    pub advice: String,
}

/// A byte count printed with a binary unit.
pub struct Bytes(pub u128);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
        let mut v = self.0 as f64;
        let mut u = 0;
        while v >= 1024.0 && u < UNITS.len() - 1 {
            v /= 1024.0;
            u += 1;
        }
        if u == 0 {
            write!(f, "{} bytes", self.0)
        } else {
            write!(f, "{v:.1} {}", UNITS[u])
        }
    }
}

/// Memory this process may still allocate, when the system says (Linux); `None` elsewhere.
pub fn available() -> Option<u128> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = |key: &str| {
        meminfo
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u128>().ok())
            .map(|v| v * 1024)
    };
    let system = kib("MemAvailable:").or_else(|| kib("MemTotal:"))?;
    // A container's limit (cgroup v2, then v1) is what the allocator really meets.
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .find_map(|t| t.trim().parse::<u128>().ok());
    Some(cgroup.map_or(system, |c| c.min(system)))
}

/// Refuses `need` bytes for `what` when more than is available; passes when the system does
/// not say. `advice` says which setting to lower.
pub fn check(
    what: impl Into<String>,
    need: u128,
    advice: impl Into<String>,
) -> Result<(), MemoryError> {
    check_against(what, need, available(), advice)
}

/// [`check`] against a given amount (`None`: unknown, so anything passes).
pub fn check_against(
    what: impl Into<String>,
    need: u128,
    have: Option<u128>,
    advice: impl Into<String>,
) -> Result<(), MemoryError> {
    match have {
        Some(have) if need > have => Err(MemoryError {
            what: what.into(),
            need,
            have,
            advice: advice.into(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_much_is_refused_in_one_line() {
        let e = check_against("--size 100000", 240 << 30, Some(16 << 30), "lower --size")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "--size 100000 needs at least 240.0 GiB of memory, but 16.0 GiB is available; lower --size"
        );
        assert!(check_against("x", 10, Some(10), "").is_ok());
        assert!(check_against("x", u128::MAX, None, "").is_ok());
        #[cfg(target_os = "linux")]
        assert!(available().is_some_and(|b| b > 0), "Linux reports memory");
        assert_eq!(Bytes(512).to_string(), "512 bytes");
    }
}
