//! `alexnet devices`, and the `--devices` flag of the commands that run on one adapter.
//!
//! Every command names adapters in one grammar, `train --devices`'s (docs/devices.md); the
//! one-device commands take a list that names exactly one. `--device I`, a plain adapter index,
//! is the older spelling and still works.
use super::{print_stdout, CommandError};
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
    /// Print one JSON object: the adapters and their limits (and the --devices plan).
    #[arg(long)]
    #[serde(default)]
    pub json: bool,
}

/// The adapter of a command that runs on one device.
#[derive(Clone, Debug, Default, PartialEq, Args, Serialize, Deserialize)]
pub struct DeviceChoice {
    /// The adapter, in `train --devices`'s grammar naming one device: `0`, adapter 1: `1,`
    /// (see `alexnet devices`).
    #[arg(long, value_name = "LIST")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<String>,
    /// The adapter as a plain index (the older spelling of --devices I,).
    #[arg(long, value_name = "I", conflicts_with = "devices")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<usize>,
}

impl DeviceChoice {
    /// The adapter index asked for, or `None` for the command's default.
    pub fn adapter(&self) -> Result<Option<usize>, String> {
        match (&self.devices, self.device) {
            (Some(_), Some(_)) => Err("give --devices or --device, not both".into()),
            (None, d) => Ok(d),
            (Some(s), None) => s.parse::<Devices>().and_then(|d| d.single()).map(Some),
        }
        .map_err(|e| format!("--devices: {e}"))
    }
}

pub(super) fn run(a: DevicesArgs) -> Result<(), CommandError> {
    let list = crate::gpu::list_adapters();
    if a.json {
        return Ok(print_stdout(
            &(devices_json(a.devices.as_deref(), &list)? + "\n"),
        )?);
    }
    crate::gpu::print_devices()?;
    if let Some(spec) = a.devices {
        let devices: Devices = spec.parse()?;
        print!("{}", device_plan(&devices, &list)?);
    }
    Ok(())
}

/// Which adapter each training device of `--devices` would use, or why it cannot.
fn device_plan(devices: &Devices, list: &[AdapterSummary]) -> Result<String, String> {
    devices.check_columns()?;
    let a = devices.adapters();
    let mut out = format!(
        "--devices {devices}: {}\n",
        if a.len() == 1 {
            "the whole network on one device"
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
    if list.is_empty() {
        return Err(crate::gpu::GpuError::NoAdapter.into());
    }
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
    let mut v = serde_json::json!({ "adapters": adapters });
    if let Some(spec) = spec {
        let devices: Devices = spec.parse()?;
        // Checks the plan (same errors as the table's) before reporting it.
        device_plan(&devices, list)?;
        v["plan"] = serde_json::json!({
            "devices": spec,
            "adapters": devices.adapters(),
            "columns": devices.adapters().len(),
        });
    }
    Ok(v.to_string())
}
