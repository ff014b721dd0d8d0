//! `alexnet devices`, and the `--devices` flag of the commands that run on one adapter.
//!
//! Every command names adapters in one grammar, `train --devices`'s (docs/devices.md); the
//! one-device commands take a list that names exactly one. `--device I`, a plain adapter index,
//! is the older spelling and still works.
mod tune;

use super::{print_stdout, CommandError};
use crate::cpu::CpuDevice;
use crate::device::Device;
use crate::gpu::AdapterSummary;
use crate::train::Devices;
use clap::Args;
use serde::{Deserialize, Serialize};

/// `alexnet devices`.
#[derive(Clone, Debug, PartialEq, Args, Serialize, Deserialize)]
pub struct DevicesArgs {
    /// A --devices value of `train` to check against the adapters found.
    #[arg(long)]
    #[serde(default)]
    pub devices: Option<String>,
    /// Print one JSON object: the adapters and their limits (and the --devices plan), or
    /// the self-test's and the tuner's results.
    #[arg(long)]
    #[serde(default)]
    pub json: bool,
    /// Check every kernel variant the engine may use against the CPU reference on the
    /// adapter of --devices (default: the first GPU, else lavapipe); exit non-zero when no
    /// variant is left for the GEMM or the convolutions.
    #[arg(long)]
    #[serde(default)]
    pub selftest: bool,
    /// Tune the paper network's matrix products (every convolution's three, fc6–fc8) at
    /// --batch on that adapter and print the table: `cached` (default) reads the cache and
    /// times what it lacks, `full` times everything again.
    #[arg(long, value_name = "MODE", num_args = 0..=1, default_missing_value = "cached")]
    #[serde(default)]
    pub tune: Option<String>,
    /// Batch size of the products --tune and --selftest consider.
    #[arg(long, default_value_t = 128)]
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Tune a small variant of the network instead (input 67, widths divided by DIV): the
    /// lavapipe dry run of scripts/gpu_bench.sh.
    #[arg(long, value_name = "DIV")]
    #[serde(default)]
    pub small: Option<usize>,
    /// `mixed`: also self-test and tune the f16 tensor-core (cooperative-matrix) tiles, on an
    /// adapter that has them (elsewhere: a warning, and the fp32 tiles only).
    #[arg(long, value_enum, default_value_t = crate::gpu::coop::Precision::Fp32)]
    #[serde(default, skip_serializing_if = "crate::gpu::coop::Precision::is_fp32")]
    pub precision: crate::gpu::coop::Precision,
}

fn default_batch() -> usize {
    128
}

/// The device of a command that runs on one device.
#[derive(Clone, Debug, Default, PartialEq, Args, Serialize, Deserialize)]
pub struct DeviceChoice {
    /// The device, in `train --devices`'s grammar naming one: `auto` (the default: the first
    /// GPU, else the CPU engine), `cpu`, `lavapipe`, `0`, adapter 1: `1,` (see `alexnet devices`).
    #[arg(long, value_name = "LIST")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<String>,
    /// The device as one name or plain adapter index (`cpu`, `1`): the older spelling.
    #[arg(long, value_name = "DEVICE", conflicts_with = "devices")]
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "name_or_index"
    )]
    pub device: Option<String>,
}

/// A stage's `device`: a name (`"cpu"`) or, as older pipeline files write it, an index (`1`).
fn name_or_index<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Name(String),
        Index(u64),
    }
    Ok(Option::<Either>::deserialize(d)?.map(|e| match e {
        Either::Name(s) => s,
        Either::Index(i) => i.to_string(),
    }))
}

impl DeviceChoice {
    /// The device asked for; `auto` when neither flag is given.
    pub fn device(&self) -> Result<Device, String> {
        match (&self.devices, &self.device) {
            (Some(_), Some(_)) => Err("give --devices or --device, not both".into()),
            (None, None) => Ok(Device::Auto),
            (None, Some(d)) => d.parse::<Device>().map_err(|e| e.to_string()),
            (Some(s), None) => s.parse::<Devices>().and_then(|d| d.single()),
        }
        .map_err(|e| format!("--devices: {e}"))
    }
}

pub(super) fn run(a: DevicesArgs) -> Result<(), CommandError> {
    if a.selftest || a.tune.is_some() {
        return tune::run(&a);
    }
    let list = crate::gpu::list_adapters();
    if a.json {
        return Ok(print_stdout(
            &(devices_json(a.devices.as_deref(), &list)? + "\n"),
        )?);
    }
    if list.is_empty() {
        // Not an error: the CPU engine below runs every command.
        println!(
            "no wgpu adapter (no GPU driver; `apt-get install mesa-vulkan-drivers` adds lavapipe)"
        );
    }
    print!("{}", crate::gpu::context::devices_table(&list));
    print!("{}", crate::cpu::describe(CpuDevice::default_threads()));
    if let Some(spec) = a.devices {
        let devices: Devices = spec.parse()?;
        print!("{}", device_plan(&devices, &list)?);
    }
    Ok(())
}

/// Which adapter each training device of `--devices` would use, or why it cannot.
fn device_plan(devices: &Devices, list: &[AdapterSummary]) -> Result<String, String> {
    use crate::train::engine::Placement;
    let mine = devices.for_this_process(list.len())?;
    let devices = &mine;
    devices.check_columns(None)?;
    let resolved = devices
        .list()
        .iter()
        .map(|d| d.resolve_among(list))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--devices {devices}: {e}"))?;
    let placement = if devices.len() > 1 && devices.columns(None) == 1 {
        Placement::replicas(&resolved)
    } else {
        Placement::from_resolved(&resolved)
    };
    let a = match placement
        .map_err(|why| format!("--devices {devices}: {why}"))?
    {
        Placement::Cpu => {
            return Ok(format!(
                "--devices {devices}: the whole network on the CPU engine ({} threads)\n",
                CpuDevice::default_threads()
            ))
        }
        Placement::Adapters(a) => a,
        Placement::CpuReplicas(n) => {
            return Ok(format!(
                "--devices {devices}: {n} data-parallel replicas of the whole network on the CPU engine ({} threads, shared)\n",
                CpuDevice::default_threads()
            ))
        }
        Placement::GpuReplicas(a) | Placement::ColumnReplicas(a) => a,
        // `devices` plans data parallelism; `train --parallel hybrid` is never resolved here.
        Placement::CpuHybrid(n) => {
            return Ok(format!(
                "--devices {devices}: the hybrid split over {n} workers on the CPU engine\n"
            ))
        }
    };
    let mut out = format!(
        "--devices {devices}: {}\n",
        if a.len() == 1 {
            "the whole network on one device"
        } else if devices.columns(None) == 1 {
            "data-parallel replicas of the whole network, one per device"
        } else {
            "the paper's two columns, one per device"
        }
    );
    for (d, &i) in a.iter().enumerate() {
        let ad = list.get(i).ok_or_else(|| {
            format!(
                "--devices {devices}: adapter {i} does not exist ({} found; see the table above)",
                list.len()
            )
        })?;
        let shared = a[..d].contains(&i);
        out += &format!(
            "  device {d}: adapter [{i}] {}{}\n",
            ad.name,
            if shared {
                " (a second logical device on the same adapter)"
            } else {
                ""
            }
        );
    }
    Ok(out)
}

/// `devices --json`: the adapters with the limits that matter for training, and the plan of
/// `--devices` when given.
fn devices_json(spec: Option<&str>, list: &[AdapterSummary]) -> Result<String, CommandError> {
    let adapters: Vec<serde_json::Value> = list
        .iter()
        .map(|a| {
            serde_json::json!({
                "index": a.index,
                "name": a.name,
                "backend": format!("{:?}", a.backend),
                "device_type": format!("{:?}", a.device_type),
                "driver": a.driver,
                "max_storage_buffer_binding_size": a.max_storage_buffer_binding_size,
                "max_buffer_size": a.max_buffer_size,
                "max_compute_workgroup_storage_size": a.max_compute_workgroup_storage_size,
                "max_compute_invocations_per_workgroup": a.max_compute_invocations_per_workgroup,
                "subgroup_sizes": [a.subgroup_sizes.0, a.subgroup_sizes.1],
                "shader_f16": a.features.contains(wgpu::Features::SHADER_F16),
            })
        })
        .collect();
    let mut v = serde_json::json!({
        "adapters": adapters,
        "cpu": { "threads": CpuDevice::default_threads() },
    });
    if let Some(spec) = spec {
        let devices: Devices = spec.parse()?;
        // Checks the plan (same errors as the table's) before reporting it.
        device_plan(&devices, list)?;
        // Each device as it resolves here: an adapter index, or "cpu" for the CPU engine.
        let resolved: Vec<serde_json::Value> = devices
            .list()
            .iter()
            .map(|d| match d.resolve_among(list) {
                Ok(crate::device::Resolved::Adapter(i)) => serde_json::json!(i),
                _ => serde_json::json!("cpu"),
            })
            .collect();
        v["plan"] = serde_json::json!({
            "devices": spec,
            "adapters": resolved,
            "columns": devices.len(),
        });
    }
    Ok(v.to_string())
}
