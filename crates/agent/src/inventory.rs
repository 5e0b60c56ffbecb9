//! What this agent offers the server: its executor, GPUs, job slots, CPUs
//! and memory ([`Inventory`], sent with every lease request), and reading
//! the `--gpus` argument.
//!
//! GPUs are found with `nvidia-smi` (`--gpus auto`), or declared by index
//! (`--gpus 0,1`): a declared inventory is taken as given, so tests and
//! machines without `nvidia-smi` on `PATH` can still offer GPUs.

use std::process::Command;

use anyhow::Context;
use podder_core::{Gpu, Inventory};

use crate::AgentConfig;

/// Reads `--gpus`: `auto` (detect with `nvidia-smi`; none when it is
/// missing or fails), `none` (or empty), or a comma-separated list of
/// indices (`0,1`) declared as this agent's GPUs, whether or not they exist.
pub fn parse_gpus(arg: &str) -> anyhow::Result<Vec<Gpu>> {
    let arg = arg.trim();
    match arg {
        "auto" => Ok(detect_gpus()),
        "none" | "" => Ok(Vec::new()),
        list => {
            let mut gpus: Vec<Gpu> = Vec::new();
            for part in list.split(',') {
                let index: u32 = part.trim().parse().with_context(|| {
                    format!("--gpus '{arg}': '{part}' is not a GPU index; use auto, none or indices such as 0,1")
                })?;
                if gpus.iter().any(|g| g.index == index) {
                    anyhow::bail!("--gpus '{arg}': GPU {index} is named twice");
                }
                gpus.push(Gpu { index, name: "declared".into(), memory_bytes: 0 });
            }
            Ok(gpus)
        }
    }
}

/// The NVIDIA GPUs `nvidia-smi` lists; none when it is missing or fails.
pub fn detect_gpus() -> Vec<Gpu> {
    let out = Command::new("nvidia-smi")
        .args(["--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"])
        .output();
    match out {
        Ok(o) if o.status.success() => parse_nvidia_smi(&String::from_utf8_lossy(&o.stdout)),
        Ok(o) => {
            tracing::warn!("nvidia-smi failed ({}): no GPUs offered: {}", o.status, String::from_utf8_lossy(&o.stderr));
            Vec::new()
        }
        Err(_) => {
            tracing::info!("nvidia-smi not found: no GPUs offered");
            Vec::new()
        }
    }
}

/// Parses `index, name, memory.total (MiB)` lines.
fn parse_nvidia_smi(text: &str) -> Vec<Gpu> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split(',').map(str::trim);
            let index = f.next()?.parse().ok()?;
            let name = f.next().unwrap_or("").to_string();
            let mib: u64 = f.next().and_then(|m| m.parse().ok()).unwrap_or(0);
            Some(Gpu { index, name, memory_bytes: mib << 20 })
        })
        .collect()
}

/// The inventory `config` offers on this machine.
pub fn inventory(config: &AgentConfig) -> Inventory {
    Inventory {
        executor: Some(config.executor),
        gpus: config.gpus.clone(),
        slots: config.slots as u32,
        cpus: std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1),
        memory_bytes: config.memory_bytes.unwrap_or_else(machine_memory),
    }
}

/// `MemTotal` from `/proc/meminfo`, in bytes (0 when unknown).
pub fn machine_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            let line = t.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(0)
}

/// The GPU variables of the process executor: `CUDA_VISIBLE_DEVICES` and
/// `NVIDIA_VISIBLE_DEVICES` name the job's assigned indices, comma-joined.
/// A job without GPUs gets both set to the empty string, so that it sees
/// none of the machine's GPUs (CUDA then reports no device).
pub(crate) fn gpu_env(gpus: &[u32]) -> Vec<(String, String)> {
    let list = gpus.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    vec![("CUDA_VISIBLE_DEVICES".into(), list.clone()), ("NVIDIA_VISIBLE_DEVICES".into(), list)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_gpu_arguments() {
        assert!(parse_gpus("none").unwrap().is_empty());
        let g = parse_gpus("0, 2").unwrap();
        assert_eq!(g.iter().map(|g| g.index).collect::<Vec<_>>(), [0, 2]);
        assert!(parse_gpus("0,x").unwrap_err().to_string().contains("'x' is not a GPU index"));
        assert!(parse_gpus("1,1").is_err());
        let smi = parse_nvidia_smi("0, NVIDIA H100 80GB HBM3, 81559\n1, NVIDIA H100, 81559\n");
        assert_eq!(smi.len(), 2);
        assert_eq!(
            (smi[0].index, smi[0].name.as_str(), smi[0].memory_bytes),
            (0, "NVIDIA H100 80GB HBM3", 81559 << 20)
        );
        assert_eq!(gpu_env(&[0, 3])[0], ("CUDA_VISIBLE_DEVICES".to_string(), "0,3".to_string()));
        assert_eq!(gpu_env(&[])[1], ("NVIDIA_VISIBLE_DEVICES".to_string(), String::new()));
        assert!(machine_memory() > 0);
    }
}
