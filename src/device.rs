//! Which engine runs the network: a wgpu adapter by index, Mesa's software Vulkan driver by
//! name (`lavapipe`), the native CPU engine (`cpu`), or `auto` — the first real GPU when the
//! machine has one, else the CPU engine. `--devices` and `--device` take these spellings;
//! `docs/devices.md` documents them.
use crate::gpu::AdapterSummary;
use std::fmt;
use std::str::FromStr;

/// A device as named on the command line or in a config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    /// The first discrete or integrated GPU adapter, else the CPU engine.
    Auto,
    /// The native CPU engine ([`crate::cpu`]).
    Cpu,
    /// The first CPU-type wgpu adapter: Mesa's lavapipe (it reports itself as `llvmpipe`).
    Lavapipe,
    /// The wgpu adapter with this index in `alexnet devices`' list.
    Adapter(usize),
}

/// What a [`Device`] names on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// The native CPU engine.
    Cpu,
    /// A wgpu adapter by index.
    Adapter(usize),
}

/// A device name that cannot be used here.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// `lavapipe` was asked for but no CPU-type adapter exists.
    #[error("no lavapipe adapter: {found} adapter(s) found and none is a software (CPU) Vulkan driver; `apt-get install mesa-vulkan-drivers` installs it, or use `cpu` for the native CPU engine")]
    NoLavapipe {
        /// Adapters found.
        found: usize,
    },
    /// The spelling is not a device.
    #[error("{0:?} is not a device: write an adapter index (`0`), `cpu` (the native CPU engine), `lavapipe` (the software Vulkan driver) or `auto` (a GPU if there is one, else cpu)")]
    Spelling(String),
}

impl Device {
    /// What `self` names among `adapters` (the list `alexnet devices` prints).
    pub fn resolve_among(self, adapters: &[AdapterSummary]) -> Result<Resolved, DeviceError> {
        Ok(match self {
            Device::Cpu => Resolved::Cpu,
            Device::Adapter(i) => Resolved::Adapter(i),
            Device::Auto => adapters
                .iter()
                .find(|a| {
                    matches!(
                        a.device_type,
                        wgpu::DeviceType::DiscreteGpu | wgpu::DeviceType::IntegratedGpu
                    )
                })
                .map_or(Resolved::Cpu, |a| Resolved::Adapter(a.index)),
            Device::Lavapipe => adapters
                .iter()
                .find(|a| a.device_type == wgpu::DeviceType::Cpu)
                .map(|a| Resolved::Adapter(a.index))
                .ok_or(DeviceError::NoLavapipe {
                    found: adapters.len(),
                })?,
        })
    }

    /// What `self` names on this machine; lists the adapters only when the name needs them.
    pub fn resolve(self) -> Result<Resolved, DeviceError> {
        match self {
            Device::Cpu => Ok(Resolved::Cpu),
            Device::Adapter(i) => Ok(Resolved::Adapter(i)),
            Device::Auto | Device::Lavapipe => self.resolve_among(&crate::gpu::list_adapters()),
        }
    }
}

impl From<usize> for Device {
    /// An adapter index.
    fn from(index: usize) -> Device {
        Device::Adapter(index)
    }
}

impl FromStr for Device {
    type Err = DeviceError;
    fn from_str(s: &str) -> Result<Self, DeviceError> {
        let t = s.trim();
        match t.to_ascii_lowercase().as_str() {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "lavapipe" | "llvmpipe" => Ok(Device::Lavapipe),
            _ => t
                .parse()
                .map(Device::Adapter)
                .map_err(|_| DeviceError::Spelling(t.to_string())),
        }
    }
}

impl fmt::Display for Device {
    /// The canonical spelling, which parses back to the same device.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Auto => write!(f, "auto"),
            Device::Cpu => write!(f, "cpu"),
            Device::Lavapipe => write!(f, "lavapipe"),
            Device::Adapter(i) => write!(f, "{i}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adapter(index: usize, device_type: wgpu::DeviceType) -> AdapterSummary {
        AdapterSummary {
            index,
            name: format!("adapter {index}"),
            backend: wgpu::Backend::Vulkan,
            device_type,
            driver: String::new(),
            max_storage_buffer_binding_size: 0,
            max_buffer_size: 0,
            max_compute_workgroup_storage_size: 0,
            max_compute_invocations_per_workgroup: 0,
            subgroup_sizes: (0, 0),
            min_storage_buffer_offset_alignment: 0,
            features: wgpu::Features::empty(),
        }
    }

    #[test]
    fn auto_takes_a_real_gpu_else_the_cpu_engine() {
        let lava = [adapter(0, wgpu::DeviceType::Cpu)];
        assert_eq!(Device::Auto.resolve_among(&lava).unwrap(), Resolved::Cpu);
        assert_eq!(Device::Auto.resolve_among(&[]).unwrap(), Resolved::Cpu);
        let both = [
            adapter(0, wgpu::DeviceType::Cpu),
            adapter(1, wgpu::DeviceType::DiscreteGpu),
        ];
        assert_eq!(
            Device::Auto.resolve_among(&both).unwrap(),
            Resolved::Adapter(1)
        );
        assert_eq!(
            Device::Lavapipe.resolve_among(&both).unwrap(),
            Resolved::Adapter(0)
        );
        let e = Device::Lavapipe.resolve_among(&both[1..]).unwrap_err();
        assert!(e.to_string().contains("mesa-vulkan-drivers"), "{e}");
        assert_eq!(
            Device::Adapter(3).resolve_among(&lava).unwrap(),
            Resolved::Adapter(3)
        );
    }

    #[test]
    fn spellings_round_trip() {
        for s in ["auto", "cpu", "lavapipe", "0", "7"] {
            let d: Device = s.parse().unwrap();
            assert_eq!(d.to_string(), s);
        }
        assert_eq!(" CPU ".parse::<Device>().unwrap(), Device::Cpu);
        assert_eq!("llvmpipe".parse::<Device>().unwrap(), Device::Lavapipe);
        let e = "gpu0".parse::<Device>().unwrap_err().to_string();
        assert!(e.contains("\"gpu0\"") && e.contains("cpu"), "{e}");
        assert!("-1".parse::<Device>().is_err());
    }
}
