//! A job's `--memory` and `--cpus` on the process executor.
//!
//! cgroup v2 would limit the job's whole process tree; the agent would need
//! a delegated cgroup subtree to create the job's cgroup in, and neither
//! this project's machines nor its CI have one (they mount cgroup v1), so
//! that path is not built yet (see ARCHITECTURE.md, "Sandbox"). What every
//! Linux gives instead, and what is used:
//! - memory: `RLIMIT_DATA` (the private writable memory of each process:
//!   heap and anonymous maps, not reservations), so an allocation past the
//!   limit fails (`MemoryError`, `ENOMEM`). It is per process, which the
//!   job's log says.
//! - CPUs: affinity to `ceil(cpus)` of the agent's CPUs, so the job's
//!   threads never run on more cores than asked; a fraction is rounded up
//!   to a whole CPU, and the log says so.
//!
//! A limit that cannot be applied refuses the job with the reason; none is
//! ever dropped silently.

use std::sync::atomic::{AtomicUsize, Ordering};

/// What the job asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Limits {
    pub cpus: Option<f64>,
    pub memory_bytes: Option<u64>,
}

/// How the limits are applied to the job's processes.
#[derive(Clone, Default)]
pub(crate) struct Applied {
    /// The job's cgroup directory (cgroup v2), joined by its init.
    pub cgroup: Option<std::path::PathBuf>,
    pub data_limit: Option<u64>,
    pub cpus: Option<libc::cpu_set_t>,
    /// What the job's log says about them.
    pub notes: Vec<String>,
}

/// Rotates the CPUs given to limited jobs, so that two one-CPU jobs do not
/// share a core while another idles.
static NEXT_CPU: AtomicUsize = AtomicUsize::new(0);

fn mib(b: u64) -> String {
    if b >= 1 << 30 && b.is_multiple_of(1 << 30) {
        format!("{} GiB", b >> 30)
    } else {
        format!("{} MiB", b.div_ceil(1 << 20))
    }
}

/// Turns `limits` into what the executor applies.
pub(crate) fn apply(limits: &Limits) -> Result<Applied, String> {
    let mut a = Applied::default();
    if let Some(bytes) = limits.memory_bytes {
        a.data_limit = Some(bytes);
        a.notes.push(format!(
            "limits: memory {} per process (RLIMIT_DATA; this agent has no cgroup v2 to limit the whole job)",
            mib(bytes)
        ));
    }
    if let Some(cpus) = limits.cpus {
        if !(cpus.is_finite() && cpus > 0.0) {
            return Err(format!("--cpus {cpus} is not a positive number of CPUs"));
        }
        // SAFETY: sched_getaffinity fills the zeroed set it is given.
        let mut allowed: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut allowed) };
        if r != 0 {
            return Err(format!("--cpus {cpus}: this agent cannot read its CPUs: {}", std::io::Error::last_os_error()));
        }
        let ids: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            .filter(|&i| unsafe { libc::CPU_ISSET(i, &allowed) }) // SAFETY: i < CPU_SETSIZE
            .collect();
        let want = cpus.ceil() as usize;
        if want < ids.len() {
            let start = NEXT_CPU.fetch_add(want, Ordering::Relaxed);
            // SAFETY: a zeroed set, filled with indices below CPU_SETSIZE.
            let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            let mut chosen = Vec::new();
            for k in 0..want {
                let id = ids[(start + k) % ids.len()];
                unsafe { libc::CPU_SET(id, &mut set) };
                chosen.push(id.to_string());
            }
            a.cpus = Some(set);
            let rounded =
                if cpus.fract() != 0.0 { format!(" ({cpus} rounded up to whole CPUs)") } else { String::new() };
            a.notes.push(format!(
                "limits: {want} of {} CPUs{rounded}, by affinity to CPU {}",
                ids.len(),
                chosen.join(",")
            ));
        } else {
            a.notes.push(format!("limits: --cpus {cpus} is at least this agent's {} CPUs: all of them", ids.len()));
        }
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_becomes_a_data_limit_and_cpus_an_affinity() {
        let a = apply(&Limits { cpus: Some(0.5), memory_bytes: Some(64 << 20) }).unwrap();
        assert_eq!(a.data_limit, Some(64 << 20));
        assert!(a.notes[0].contains("memory 64 MiB per process"), "{:?}", a.notes);
        let n = std::thread::available_parallelism().unwrap().get();
        if n > 1 {
            let set = a.cpus.expect("an affinity");
            let count = (0..libc::CPU_SETSIZE as usize).filter(|&i| unsafe { libc::CPU_ISSET(i, &set) }).count();
            assert_eq!(count, 1);
            assert!(a.notes[1].contains("rounded up"), "{:?}", a.notes);
        }
        assert!(apply(&Limits { cpus: Some(f64::NAN), memory_bytes: None }).is_err());
        assert!(apply(&Limits::default()).unwrap().notes.is_empty());
    }
}
