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
    for (name, page) in pages(cmd) {
        let path = dir.join(format!("{name}.1"));
        let buf = render(&name, page).map_err(|e| format!("rendering the man page {name}: {e}"))?;
        crate::atomic::write_bytes(&path, &buf).map_err(|e| format!("{e}"))?;
        written.push(path);
    }
    Ok(written)
}

/// The pages to write: the top level as `alexnet`, each command as `alexnet-<command>` (the
/// name `man` looks up, as git's pages do), its synopsis spelled as typed: `alexnet <command>`.
fn pages(cmd: Command) -> Vec<(String, Command)> {
    let mut pages = vec![(String::from("alexnet"), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("alexnet-{}", sub.get_name());
        let page = sub
            .clone()
            .display_name(name.clone())
            .bin_name(format!("alexnet {}", sub.get_name()));
        pages.push((name, page));
    }
    pages
}

/// One page in the usual order of sections, with the help's examples under EXAMPLES (clap_mangen
/// would print them under EXTRA, a heading no man page reader looks for).
fn render(name: &str, page: Command) -> std::io::Result<Vec<u8>> {
    let command = name.strip_prefix("alexnet-").unwrap_or("");
    let examples = super::examples::examples(command);
    let page = page.after_help(None::<&str>).after_long_help(None::<&str>);
    let man = clap_mangen::Man::new(page.clone())
        .title(name.to_uppercase())
        .source(format!("alexnet {}", env!("CARGO_PKG_VERSION")));
    let mut buf = Vec::new();
    man.render_title(&mut buf)?;
    man.render_name_section(&mut buf)?;
    man.render_synopsis_section(&mut buf)?;
    man.render_description_section(&mut buf)?;
    if page.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut buf)?;
    }
    if page.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(&mut buf)?;
    }
    if let Some(examples) = examples {
        examples_section(examples).to_writer(&mut buf)?;
    }
    if page
        .get_version()
        .or_else(|| page.get_long_version())
        .is_some()
    {
        man.render_version_section(&mut buf)?;
    }
    if page.get_author().is_some() {
        man.render_authors_section(&mut buf)?;
    }
    Ok(buf)
}

/// The EXAMPLES section: the command lines as written (no filling), indented.
fn examples_section(examples: &str) -> roff::Roff {
    let mut roff = roff::Roff::new();
    roff.control("SH", ["EXAMPLES"]);
    roff.control("RS", []).control("nf", []);
    for line in examples.lines() {
        roff.text([roff::roman(line.trim_start())]);
    }
    roff.control("fi", []).control("RE", []);
    roff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_page_is_named_for_man_and_has_its_examples_under_examples() {
        let dir = tempfile::tempdir().unwrap();
        let written = man_pages(crate::commands::Cli::definition(), dir.path()).unwrap();
        let page = dir.path().join("alexnet-export-features.1");
        assert!(written.contains(&page), "{written:?}");
        assert!(!dir.path().join("export-features.1").exists());
        let text = std::fs::read_to_string(&page).unwrap();
        assert!(text.contains(".TH ALEXNET-EXPORT-FEATURES 1"), "{text}");
        // roff escapes '-' as '\\-' in running text.
        assert!(text.contains("alexnet\\-export\\-features \\-"), "{text}");
        assert!(!text.contains(".SH EXTRA"), "{text}");
        let examples = text
            .split(".SH EXAMPLES")
            .nth(1)
            .unwrap_or_else(|| panic!("no EXAMPLES section:\n{text}"));
        let first = super::super::examples::examples("export-features").unwrap();
        let first = first.lines().next().unwrap().replace('-', "\\-");
        assert!(examples.contains(&first), "{first} not in:\n{examples}");
        // Examples come before the later sections, as man pages order them.
        assert!(text.find(".SH OPTIONS").unwrap() < text.find(".SH EXAMPLES").unwrap());
        let top = std::fs::read_to_string(dir.path().join("alexnet.1")).unwrap();
        assert!(
            top.contains(".SH EXAMPLES") && !top.contains(".SH EXTRA"),
            "{top}"
        );
    }
}
