//! The `--devices` grammar and where a run's devices land: the logical devices a command
//! names ([`Devices`], parsed once from the spelling in `docs/devices.md`) and, for training,
//! the [`Placement`] they resolve to on this machine (the CPU engine, one adapter, or two for
//! the column split), decided before anything is opened.
use super::EngineError;
use crate::device::{Device, Resolved};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The most logical devices a run may ask for; more is surely a typo.
pub const MAX_DEVICES: usize = 16;

/// The logical training devices, each a [`Device`]: an adapter index (which may repeat: two
/// logical devices on one adapter), `cpu`, `lavapipe` or `auto`.
///
/// Spelled as in `docs/devices.md`'s `--devices`: a comma list names devices (`"0,1"`,
/// `"0,0"`); a bare number `n` means `n` logical devices on adapter 0 (`"2"` is `0,0`; `"0"` and
/// `"1"` are both adapter 0 alone). Adapter 1 alone is written with a trailing comma, `"1,"`.
/// A name stands for one device: `"cpu"`, `"lavapipe"`, `"auto"` (the default: the first real
/// GPU, else the CPU engine).
///
/// Under a launcher (MPI, Slurm) `"local"` gives each rank the adapter numbered by its rank
/// on its machine, and `"local:LIST"` cuts LIST into equal groups, one per rank on the
/// machine, in order ([`Devices::on_this_rank`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Devices(Vec<Device>, Local);

/// Whether a device list is this process's, or is cut by the process's rank on its machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Local {
    /// The list is this process's.
    No,
    /// `local`: adapter number (rank on this machine).
    Each,
    /// `local:LIST`: group number (rank on this machine) of the list cut in equal groups.
    Groups,
}

/// Where this process stands among the ranks of its machine: its rank there (from 0) and
/// how many ranks the machine runs, if known. From the MPI world when there is one, else
/// from what launchers set ([`NODE_LOCAL_VARS`]), else the only rank.
pub fn node_local() -> (usize, Option<usize>) {
    let world = crate::collective::world();
    if world.size() > 1 {
        let (r, n) = world.node_local();
        return (r, Some(n));
    }
    let var = |k: &str| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
    };
    for (rank, size) in NODE_LOCAL_VARS {
        if let Some(r) = var(rank) {
            return (r, var(size));
        }
    }
    (0, Some(1))
}

/// The variables launchers set for a rank's place on its machine, (rank, ranks): Open MPI's
/// `mpirun`, Slurm's `srun`, MPICH's Hydra.
pub const NODE_LOCAL_VARS: [(&str, &str); 3] = [
    ("OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"),
    ("SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"),
    ("MPI_LOCALRANKID", "MPI_LOCALNRANKS"),
];

impl Devices {
    /// Logical devices on the given devices (or adapter indices); empty lists and more than
    /// [`MAX_DEVICES`] are refused.
    pub fn new<D: Into<Device>>(devices: Vec<D>) -> Result<Self, String> {
        let devices: Vec<Device> = devices.into_iter().map(Into::into).collect();
        if devices.is_empty() || devices.len() > MAX_DEVICES {
            return Err(format!(
                "{} devices: a run needs between 1 and {MAX_DEVICES}",
                devices.len()
            ));
        }
        Ok(Devices(devices, Local::No))
    }
    /// The device of each logical device, in order.
    pub fn list(&self) -> &[Device] {
        &self.0
    }
    /// Number of logical devices.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Always false: a parsed `Devices` names at least one device.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Training's count check with `--columns` (`None`: the default, [`Devices::columns`]):
    /// the paper's split is model parallel with exactly two columns, so `--columns 2` takes
    /// devices in pairs (one pair: the split; more: data-parallel replicas of it); one column
    /// per replica takes any number of devices (data-parallel replicas).
    pub fn check_columns(&self, columns: Option<usize>) -> Result<(), String> {
        if self.1 != Local::No {
            // Each rank checks its own group, once it knows it (`Placement::resolve`).
            return Ok(());
        }
        let n = self.0.len();
        match (columns, n) {
            (Some(c), _) if c == 0 || c > 2 => Err(format!(
                "--columns {c}: the network runs whole (1) or as the paper's two columns (2)"
            )),
            (Some(2), 1) => Err(format!(
                "devices {self} names one device; the paper's two columns need two (\"0,1\", or \"2\" for two on adapter 0), or --columns 1"
            )),
            (Some(2), _) if n % 2 != 0 => Err(format!(
                "devices {self} names {n} devices; --columns 2 takes them in pairs (one pair per replica of the paper's two columns): name an even number, or use --columns 1 ({n} data-parallel replicas of the whole network)"
            )),
            (Some(2), 3..) if self.0.contains(&Device::Cpu) => Err(format!(
                "devices {self} with --columns 2 include the CPU engine; the two-column split runs on GPU devices only: give GPU devices in pairs (0,0,0,0 or 0,1,2,3), or use --columns 1 for replicas of the whole network"
            )),
            _ => Ok(()),
        }
    }

    /// The columns per replica when `--columns` is not given: the paper's two for two GPU
    /// devices (the default it always had), else 1 (the CPU engine, one device, or more
    /// than two: data-parallel replicas).
    pub fn columns(&self, columns: Option<usize>) -> usize {
        columns.unwrap_or(match self.0.as_slice() {
            [a, b] if *a != Device::Cpu && *b != Device::Cpu => 2,
            _ => 1,
        })
    }
    /// The device of a command that runs on one (`eval`, `forward`, `predict`,
    /// `export-features`): the list must name exactly one.
    pub fn single(&self) -> Result<Device, String> {
        if self.is_local() {
            return Err(format!(
                "devices {self} picks devices by a training rank's place on its machine; this command runs on one device: name it (\"cpu\", \"0\", adapter 1: \"1,\")"
            ));
        }
        match self.0.as_slice() {
            [only] => Ok(*only),
            list => Err(format!(
                "devices {self} names {} devices; this command runs on one device: name it alone (\"cpu\", \"0\", adapter 1: \"1,\")",
                list.len()
            )),
        }
    }
}

impl Devices {
    /// The devices of this process: the list itself, or for `local` / `local:LIST` this
    /// rank's adapter or group by its `(rank, ranks)` on its machine ([`node_local`]) among
    /// `adapters` (how many this machine has). Refuses, naming the numbers, when the
    /// machine has fewer adapters than ranks or the list does not cut evenly.
    pub fn on_this_rank(
        &self,
        (rank, ranks): (usize, Option<usize>),
        adapters: usize,
    ) -> Result<Devices, String> {
        let on = |what: String| {
            format!(
                "--devices {self}: this process is rank {rank} of {} on its machine; {what}",
                ranks.map_or("?".into(), |n| n.to_string())
            )
        };
        match self.1 {
            Local::No => Ok(self.clone()),
            Local::Each => {
                let need = ranks.unwrap_or(rank + 1).max(rank + 1);
                if adapters < need {
                    return Err(on(format!(
                        "the machine has {adapters} GPU adapter(s), fewer than its {need} ranks, so this rank has no adapter of its own; start at most {adapters} ranks per machine (mpirun --npernode, srun --ntasks-per-node), or give ranks logical devices to share: --devices local:0,0"
                    )));
                }
                Ok(Devices(vec![Device::Adapter(rank)], Local::No))
            }
            Local::Groups => {
                let Some(n) = ranks else {
                    return Err(on(
                        "the launcher did not say how many ranks run on this machine (OMPI_COMM_WORLD_LOCAL_SIZE, SLURM_NTASKS_PER_NODE or MPI_LOCALNRANKS), so LIST cannot be cut; run under mpirun or srun, or name each rank's devices".into(),
                    ));
                };
                let len = self.0.len();
                if n == 0 || len < n || len % n != 0 {
                    return Err(on(format!(
                        "{len} devices do not cut into {n} equal groups (one per rank on the machine); list a multiple of {n} devices"
                    )));
                }
                let k = len / n;
                Ok(Devices(
                    self.0[rank * k..(rank + 1) * k].to_vec(),
                    Local::No,
                ))
            }
        }
    }

    /// [`Devices::on_this_rank`] for this process ([`node_local`]).
    pub fn for_this_process(&self, adapters: usize) -> Result<Devices, String> {
        self.on_this_rank(node_local(), adapters)
    }

    /// True for `local` and `local:LIST`: the list depends on the rank.
    pub fn is_local(&self) -> bool {
        self.1 != Local::No
    }
}

impl Default for Devices {
    fn default() -> Self {
        Devices(vec![Device::Auto], Local::No)
    }
}

impl FromStr for Devices {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("local") {
            // The adapter is picked per rank; the list holds what a lone process takes.
            return Ok(Devices(vec![Device::Adapter(0)], Local::Each));
        }
        if let Some(rest) = s.strip_prefix("local:") {
            let Devices(list, _) = rest.parse::<Devices>().map_err(|e| format!("local:{e}"))?;
            return Ok(Devices(list, Local::Groups));
        }
        let bad = |why: &str| {
            format!(
                "devices {s:?}: {why}; write adapter indices separated by commas (\"0,1\", \"0,0\", adapter 1 alone: \"1,\"), a count of devices on adapter 0 (\"2\"), or a name: \"cpu\" (the native CPU engine), \"lavapipe\" (the software Vulkan driver), \"auto\" (a GPU if there is one, else cpu)"
            )
        };
        if s.is_empty() {
            return Err(bad("empty"));
        }
        let one = |p: &str| {
            p.parse::<Device>()
                .map_err(|_| bad(&format!("{p:?} is not an adapter index or a device name")))
        };
        let list = if s.contains(',') {
            let parts: Vec<&str> = s.split(',').map(str::trim).collect();
            // A single trailing comma is how adapter n alone is written; other empties are typos.
            let parts = match parts.split_last() {
                Some((last, rest)) if last.is_empty() && !rest.is_empty() => rest,
                _ => &parts[..],
            };
            parts
                .iter()
                .map(|p| one(p))
                .collect::<Result<Vec<_>, _>>()?
        } else if let Ok(n) = s.parse::<usize>() {
            vec![Device::Adapter(0); n.max(1)]
        } else if s.starts_with('-') || s.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(bad("not a number"));
        } else {
            vec![one(s)?]
        };
        if list.len() > MAX_DEVICES {
            return Err(bad(&format!("more than {MAX_DEVICES} devices")));
        }
        Ok(Devices(list, Local::No))
    }
}

impl TryFrom<String> for Devices {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for Devices {
    /// The canonical spelling, which parses back to the same list.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Local::Each => return write!(f, "local"),
            Local::Groups => write!(f, "local:")?,
            Local::No => {}
        }
        match self.0.as_slice() {
            [Device::Adapter(only)] if *only != 0 => write!(f, "{only},"),
            list => {
                let parts: Vec<String> = list.iter().map(Device::to_string).collect();
                write!(f, "{}", parts.join(","))
            }
        }
    }
}

impl From<Devices> for String {
    fn from(d: Devices) -> String {
        d.to_string()
    }
}

/// How a run with several devices shares the network among them (`--parallel`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parallel {
    /// Data parallel: every device runs the whole network on its share of the batch
    /// (replicas), or the paper's two columns with `--columns 2`.
    #[default]
    Data,
    /// "One weird trick": conv layers data parallel, fc layers model parallel (each device
    /// computes its share of every fc layer's neurons for the whole batch).
    Hybrid,
}

impl FromStr for Parallel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "data" => Ok(Parallel::Data),
            "hybrid" => Ok(Parallel::Hybrid),
            other => Err(format!(
                "parallel must be data (replicas or the paper's columns) or hybrid (conv layers data parallel, fc layers model parallel), not {other:?}"
            )),
        }
    }
}

impl fmt::Display for Parallel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Parallel::Data => "data",
            Parallel::Hybrid => "hybrid",
        })
    }
}

/// Where a run's `--devices` land on this machine, decided before anything is opened or
/// written, so a list that cannot run fails first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// The whole network on the CPU engine.
    Cpu,
    /// One GPU adapter for the whole network, or two for the column split.
    Adapters(Vec<usize>),
    /// This many data-parallel replicas of the whole network on the CPU engine.
    CpuReplicas(usize),
    /// Data-parallel replicas of the whole network, one per GPU adapter listed (an adapter
    /// may repeat: two logical devices on one adapter).
    GpuReplicas(Vec<usize>),
    /// The hybrid split over this many workers on the CPU engine (`--parallel hybrid`).
    CpuHybrid(usize),
    /// Data-parallel replicas of the paper's two columns, one per consecutive pair of GPU
    /// adapters listed (`--columns 2` with four or more devices).
    ColumnReplicas(Vec<usize>),
}

impl Placement {
    /// Resolves `devices` with `--columns` (`auto` and `lavapipe` against the adapters found
    /// here).
    pub fn resolve(devices: &Devices, columns: Option<usize>) -> Result<Placement, EngineError> {
        let mine;
        let devices = if devices.is_local() {
            let adapters = crate::gpu::list_adapters().len();
            mine = devices
                .for_this_process(adapters)
                .map_err(EngineError::NotBuilt)?;
            &mine
        } else {
            devices
        };
        devices
            .check_columns(columns)
            .map_err(EngineError::NotBuilt)?;
        let named = devices.list();
        let resolved = if named
            .iter()
            .any(|d| matches!(d, Device::Auto | Device::Lavapipe))
        {
            let list = crate::gpu::list_adapters();
            named
                .iter()
                .map(|d| d.resolve_among(&list))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            named
                .iter()
                .map(|d| d.resolve())
                .collect::<Result<Vec<_>, _>>()?
        };
        if devices.len() > 1 && devices.columns(columns) == 1 {
            return Placement::replicas(&resolved)
                .map_err(|why| EngineError::NotBuilt(format!("--devices {devices}: {why}")));
        }
        if devices.len() > 2 {
            return Placement::column_replicas(&resolved)
                .map_err(|why| EngineError::NotBuilt(format!("--devices {devices}: {why}")));
        }
        Placement::from_resolved(&resolved)
            .map_err(|why| EngineError::NotBuilt(format!("--devices {devices}: {why}")))
    }

    /// This placement under `--parallel`: data parallelism keeps it; the hybrid split takes
    /// two or more devices on the CPU engine, the one place it is built.
    pub fn with_parallel(self, parallel: Parallel) -> Result<Placement, EngineError> {
        let refuse = |why: &str| {
            Err(EngineError::NotBuilt(format!(
                "--parallel hybrid {why}; use --devices cpu,cpu (or more cpu entries, one per worker) with --parallel hybrid, or --parallel data"
            )))
        };
        match (parallel, self) {
            (Parallel::Data, p) => Ok(p),
            (Parallel::Hybrid, Placement::CpuReplicas(n))
            | (Parallel::Hybrid, Placement::CpuHybrid(n)) => Ok(Placement::CpuHybrid(n)),
            (Parallel::Hybrid, Placement::Cpu) => {
                refuse("needs two or more workers and --devices names one")
            }
            (Parallel::Hybrid, _) => refuse(
                "is built for the CPU engine only (GPU devices and the two-column split are not)",
            ),
        }
    }

    /// The placement of data-parallel replicas (`--columns 1`) on devices already resolved:
    /// all on the CPU engine or all on GPU adapters.
    pub fn replicas(resolved: &[Resolved]) -> Result<Placement, String> {
        if resolved.iter().all(|r| *r == Resolved::Cpu) {
            return Ok(Placement::CpuReplicas(resolved.len()));
        }
        let adapters: Vec<usize> = resolved
            .iter()
            .filter_map(|r| match r {
                Resolved::Adapter(i) => Some(*i),
                Resolved::Cpu => None,
            })
            .collect();
        if adapters.len() == resolved.len() {
            return Ok(Placement::GpuReplicas(adapters));
        }
        Err(format!(
            "{} data-parallel replicas mix the CPU engine and GPU adapters; the CPU engine is one device that does not share a run with GPUs: replicas run all on the CPU engine (--devices cpu,cpu) or all on GPU devices (--devices 0,0 or 0,1 with --columns 1)",
            resolved.len()
        ))
    }

    /// The placement of replicas of the two columns (`--columns 2`, more than two devices) on
    /// devices already resolved: GPU adapters only, an even number of them.
    pub fn column_replicas(resolved: &[Resolved]) -> Result<Placement, String> {
        let adapters: Vec<usize> = resolved
            .iter()
            .filter_map(|r| match r {
                Resolved::Adapter(i) => Some(*i),
                Resolved::Cpu => None,
            })
            .collect();
        if adapters.len() != resolved.len() {
            return Err(format!(
                "{} devices with --columns 2 include the CPU engine; the two-column split runs on GPU devices only: give GPU devices in pairs (0,0,0,0 or 0,1,2,3), or use --columns 1 for replicas of the whole network",
                resolved.len()
            ));
        }
        if adapters.len() % 2 != 0 {
            return Err(format!(
                "{} devices with --columns 2: the columns take devices in pairs; name an even number",
                adapters.len()
            ));
        }
        Ok(Placement::ColumnReplicas(adapters))
    }

    /// The placement of devices already resolved, or why they cannot train together.
    pub fn from_resolved(resolved: &[Resolved]) -> Result<Placement, String> {
        // Users meet the count check on the names (`Devices::check_columns`); this arm only
        // keeps a caller that skipped it from building a third column.
        match resolved {
            [_, _, _, ..] => Err(format!("{} devices; the split has two columns", resolved.len())),
            [Resolved::Cpu] => Ok(Placement::Cpu),
            _ if resolved.contains(&Resolved::Cpu) => Err(
                "the CPU engine runs the whole network on one device; the two-column split runs on two GPU devices (--devices cpu, or two adapters)"
                    .into(),
            ),
            _ => Ok(Placement::Adapters(
                resolved
                    .iter()
                    .filter_map(|r| match r {
                        Resolved::Adapter(i) => Some(*i),
                        Resolved::Cpu => None,
                    })
                    .collect(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Resolved::{Adapter, Cpu};

    #[test]
    fn columns_default_to_the_papers_split_for_two_gpus_and_replicas_otherwise() {
        let d = |s: &str| s.parse::<Devices>().unwrap();
        assert_eq!(d("0,1").columns(None), 2);
        assert_eq!(d("0,1").columns(Some(1)), 1);
        assert_eq!(d("0").columns(None), 1);
        assert_eq!(d("cpu,cpu").columns(None), 1);
        assert_eq!(d("0,1,2,3").columns(None), 1);
        assert!(d("0,1,2,3").check_columns(None).is_ok());
        assert!(d("0,1,2,3").check_columns(Some(2)).is_ok());
        let e = d("0,1,2").check_columns(Some(2)).unwrap_err();
        assert!(e.contains("--columns 1") && e.contains("in pairs"), "{e}");
        let e = d("cpu,cpu,cpu,cpu").check_columns(Some(2)).unwrap_err();
        assert!(
            e.contains("GPU devices only") && e.contains("--columns 1"),
            "{e}"
        );
        assert_eq!(
            Placement::column_replicas(&[Adapter(0), Adapter(1), Adapter(1), Adapter(2)]),
            Ok(Placement::ColumnReplicas(vec![0, 1, 1, 2]))
        );
        let e = Placement::column_replicas(&[Cpu, Cpu, Cpu, Cpu]).unwrap_err();
        assert!(
            e.contains("GPU devices only") && e.contains("--columns 1"),
            "{e}"
        );
        let e = Placement::column_replicas(&[Adapter(0); 3]).unwrap_err();
        assert!(e.contains("in pairs"), "{e}");
        assert!(d("0").check_columns(Some(2)).is_err());
        assert!(d("0,1").check_columns(Some(3)).is_err());
        assert_eq!(
            Placement::resolve(&d("cpu,cpu,cpu"), None).unwrap(),
            Placement::CpuReplicas(3)
        );
        assert_eq!(
            Placement::replicas(&[Cpu, Cpu]),
            Ok(Placement::CpuReplicas(2))
        );
        assert_eq!(
            Placement::replicas(&[Adapter(0), Adapter(1), Adapter(1)]),
            Ok(Placement::GpuReplicas(vec![0, 1, 1]))
        );
        let e = Placement::replicas(&[Adapter(0), Cpu]).unwrap_err();
        assert!(e.contains("mix the CPU engine"), "{e}");
    }

    #[test]
    fn hybrid_takes_cpu_workers_only_and_says_what_to_use() {
        let hybrid = |p: Placement| p.with_parallel(Parallel::Hybrid);
        assert_eq!(
            hybrid(Placement::CpuReplicas(3)).unwrap(),
            Placement::CpuHybrid(3)
        );
        assert_eq!(
            Placement::CpuReplicas(3)
                .with_parallel(Parallel::Data)
                .unwrap(),
            Placement::CpuReplicas(3)
        );
        for bad in [
            Placement::Cpu,
            Placement::Adapters(vec![0, 1]),
            Placement::GpuReplicas(vec![0, 0]),
        ] {
            let e = hybrid(bad.clone()).unwrap_err().to_string();
            assert!(e.contains("--devices cpu,cpu"), "{bad:?}: {e}");
        }
        assert_eq!("hybrid".parse::<Parallel>(), Ok(Parallel::Hybrid));
        assert!("model".parse::<Parallel>().unwrap_err().contains("data"));
    }

    #[test]
    fn placement_keeps_the_cpu_engine_alone_and_at_most_two_columns() {
        assert_eq!(Placement::from_resolved(&[Cpu]), Ok(Placement::Cpu));
        assert_eq!(
            Placement::from_resolved(&[Adapter(1), Adapter(1)]),
            Ok(Placement::Adapters(vec![1, 1]))
        );
        for bad in [&[Cpu, Adapter(0)][..], &[Cpu, Cpu], &[Adapter(0), Cpu]] {
            let e = Placement::from_resolved(bad).unwrap_err();
            assert!(
                e.contains("CPU engine runs the whole network"),
                "{bad:?}: {e}"
            );
        }
        let e = Placement::from_resolved(&[Adapter(0); 3]).unwrap_err();
        assert!(e.contains("two columns"), "{e}");
    }
}

#[cfg(test)]
mod grammar_tests {
    use super::*;

    #[test]
    fn devices_spellings() {
        use Device::{Adapter as A, Auto, Cpu, Lavapipe};
        let d = |s: &str| s.parse::<Devices>().map(|d| d.list().to_vec());
        assert_eq!(d("0"), Ok(vec![A(0)]));
        assert_eq!(d("1"), Ok(vec![A(0)]));
        assert_eq!(d("2"), Ok(vec![A(0), A(0)]));
        assert_eq!(d("0,1"), Ok(vec![A(0), A(1)]));
        assert_eq!(d("0,0"), Ok(vec![A(0), A(0)]));
        assert_eq!(d(" 1, 0 "), Ok(vec![A(1), A(0)]));
        assert_eq!(d("1,"), Ok(vec![A(1)]));
        assert_eq!(d("cpu"), Ok(vec![Cpu]));
        assert_eq!(d(" Lavapipe "), Ok(vec![Lavapipe]));
        assert_eq!(d("auto"), Ok(vec![Auto]));
        assert_eq!(d("cpu,lavapipe"), Ok(vec![Cpu, Lavapipe]));
        assert_eq!(Devices::default().to_string(), "auto");
        assert!(Devices::new(Vec::<Device>::new()).is_err());
        assert_eq!(Devices::new(vec![1usize]).unwrap().to_string(), "1,");
        assert_eq!(Devices::new(vec![A(2), A(2)]).unwrap().to_string(), "2,2");
        for bad in ["", "a", "0,,1", ",", "-1", "0;1", "99", "gpu", "cpu,,"] {
            assert!(d(bad).is_err(), "{bad:?} should be rejected");
        }
        // `local`: adapter (rank on the machine); `local:LIST`: the rank's group of LIST.
        let local: Devices = "local".parse().unwrap();
        assert_eq!(local.to_string(), "local");
        assert_eq!(local.on_this_rank((1, Some(2)), 2).unwrap().list(), [A(1)]);
        let e = local.on_this_rank((1, Some(2)), 1).unwrap_err();
        assert!(
            e.contains("rank 1 of 2") && e.contains("1 GPU adapter(s), fewer than its 2 ranks"),
            "{e}"
        );
        let groups: Devices = "local:0,0,1,1".parse().unwrap();
        assert_eq!(groups.to_string(), "local:0,0,1,1");
        assert_eq!(groups.to_string().parse::<Devices>().unwrap(), groups);
        assert_eq!(
            groups.on_this_rank((1, Some(2)), 2).unwrap().list(),
            [A(1), A(1)]
        );
        assert_eq!(groups.on_this_rank((0, Some(1)), 2).unwrap(), {
            let all: Devices = "0,0,1,1".parse().unwrap();
            all
        });
        let e = groups.on_this_rank((0, Some(3)), 2).unwrap_err();
        assert!(
            e.contains("4 devices do not cut into 3 equal groups"),
            "{e}"
        );
        assert!(groups.on_this_rank((0, None), 2).is_err());
        assert!(groups.check_columns(None).is_ok());
        assert!("local:".parse::<Devices>().is_err());
        assert!(local.single().unwrap_err().contains("one device"));
        let e = d("gpu").unwrap_err();
        assert!(e.contains("\"cpu\"") && e.contains("lavapipe"), "{e}");
        for s in [
            "0", "0,1", "0,0", "1,", "3,2,1", "cpu", "auto", "lavapipe", "cpu,0",
        ] {
            let v: Devices = s.parse().unwrap();
            assert_eq!(v.to_string(), s, "canonical spelling");
            assert_eq!(v.to_string().parse::<Devices>().unwrap(), v, "{s}");
        }
    }
}
