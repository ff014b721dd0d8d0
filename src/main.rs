//! The `alexnet` binary: parse, run the one dispatcher, print the error chain.
use alexnet::commands::{execute, Cli};
use std::path::Path;

/// The exit status of a command that ran and failed (docs/outputs.md#exit-status).
const RUNTIME_FAILURE: i32 = 1;

fn main() {
    quiet_wayland();
    alexnet::atomic::remove_on_signal();
    join_mpi();
    let result = execute(Cli::parse_args().command);
    let (rank, ranks) = {
        let w = alexnet::collective::world();
        (w.rank(), w.size())
    };
    // MPI is finalised here (the world dropped), after every collective call and before the
    // process exits; a failed rank of a job keeps it to abort the job below.
    if result.is_ok() || ranks == 1 {
        drop(alexnet::collective::uninstall());
    }
    match result {
        Ok(0) => {}
        Ok(code) => std::process::exit(code),
        Err(err) => {
            let mut shown = err.to_string();
            if ranks > 1 {
                shown = format!("rank {rank} of {ranks}: {shown}");
            }
            eprintln!("error: {shown}");
            let mut cause = err.source();
            while let Some(c) = cause {
                // Many messages already quote their cause (`{path}: {source}`): print a
                // cause only when it adds something.
                let text = c.to_string();
                if !shown.contains(text.trim()) {
                    eprintln!("  caused by: {}", text.trim_end());
                    shown.push('\n');
                    shown.push_str(&text);
                }
                cause = c.source();
            }
            // One failed rank ends the whole MPI job (the others would wait in the next
            // all-reduce forever); mpirun reports the rank. A world of one returns here.
            alexnet::collective::world().abort(RUNTIME_FAILURE);
            // 2 stays the argument parser's (a usage mistake, reported before anything ran);
            // 1 says the command ran and failed, so scripts can tell the two apart.
            std::process::exit(RUNTIME_FAILURE);
        }
    }
}

/// Joins the MPI job when an MPI launcher started this process (`mpirun`, `srun`; the `mpi`
/// feature): the training loop then sums gradients over the job's ranks. Errors here end
/// the process before any command runs.
#[cfg(feature = "mpi")]
fn join_mpi() {
    match alexnet::collective::mpi::MpiWorld::from_launcher() {
        Ok(Some(w)) => alexnet::collective::install(std::rc::Rc::new(w)),
        Ok(None) => {}
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(RUNTIME_FAILURE);
        }
    }
}

/// Without the `mpi` feature every process is a world of one.
#[cfg(not(feature = "mpi"))]
fn join_mpi() {}

/// Without a desktop session (ssh, CI, cron) the Vulkan driver's libwayland-client prints
/// "error: XDG_RUNTIME_DIR is invalid or not set in the environment." each time wgpu lists
/// adapters. alexnet never opens a window, and with neither variable usable no Wayland
/// connection could succeed anyway, so the display is pointed at an absolute path that is no
/// socket: the connection attempt then fails quietly. Runs before any thread exists.
fn quiet_wayland() {
    let absolute = |key: &str| std::env::var_os(key).is_some_and(|v| Path::new(&v).is_absolute());
    if !absolute("XDG_RUNTIME_DIR") && !absolute("WAYLAND_DISPLAY") {
        std::env::set_var("WAYLAND_DISPLAY", "/dev/null");
    }
}
