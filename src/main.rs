//! The `alexnet` binary: parse, run the one dispatcher, print the error chain.
use alexnet::commands::{execute, Cli};
use std::path::Path;

/// The exit status of a command that ran and failed (docs/outputs.md#exit-status).
const RUNTIME_FAILURE: i32 = 1;

fn main() {
    quiet_wayland();
    alexnet::atomic::remove_on_signal();
    match execute(Cli::parse_args().command) {
        Ok(0) => {}
        Ok(code) => std::process::exit(code),
        Err(err) => {
            let mut shown = err.to_string();
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
            // 2 stays the argument parser's (a usage mistake, reported before anything ran);
            // 1 says the command ran and failed, so scripts can tell the two apart.
            std::process::exit(RUNTIME_FAILURE);
        }
    }
}

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
