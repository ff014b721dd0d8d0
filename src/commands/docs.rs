//! Shell completions and man pages, generated from the clap definitions so they never drift
//! from the real flags.
use clap::Command;
use std::path::{Path, PathBuf};

/// Writes the completion script for `shell` to stdout.
pub fn completions(cmd: &mut Command, shell: clap_complete::Shell) {
    clap_complete::generate(shell, cmd, "alexnet", &mut std::io::stdout());
}

/// Writes `alexnet.1` and `alexnet-<command>.1` for every command into `dir` (created if
/// missing); each page is written under a temporary name and renamed. Returns the pages.
pub fn man_pages(cmd: Command, dir: &Path) -> Result<Vec<PathBuf>, String> {
    let cannot = |what: &str, path: &Path| {
        let what = format!("{}: cannot {what}", path.display());
        move |e: std::io::Error| format!("{what}: {e}")
    };
    std::fs::create_dir_all(dir).map_err(cannot("create the directory", dir))?;
    let mut written = Vec::new();
    let mut pages = vec![(String::from("alexnet"), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("alexnet-{}", sub.get_name());
        pages.push((name, sub.clone()));
    }
    for (name, page) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(page)
            .title(name.to_uppercase())
            .render(&mut buf)
            .map_err(|e| format!("rendering the man page {name}: {e}"))?;
        crate::atomic::write_bytes(&path, &buf).map_err(|e| format!("{e}"))?;
        written.push(path);
    }
    Ok(written)
}
