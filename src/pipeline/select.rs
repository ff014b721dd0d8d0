//! Naming the stages of a pipeline, so that a scheduler can run them apart (`alexnet run FILE
//! --list`, then `--only NAME` in each task of a Slurm job array; docs/job-arrays.md).
//!
//! A stage's name is what it makes, relative to the work directory (a training run's folder
//! `baseline-s1`, an ingest's `shards/train10k`), since that is what a user knows it by and
//! what stays put when stages are added before it; a stage that makes nothing under the work
//! directory, or whose output another stage shares, is named by its number and kind (`07-eval`).
use super::{Pipeline, PipelineError};
use std::path::Path;

/// Each stage's name, in order (unique within the pipeline).
pub fn stage_names(p: &Pipeline) -> Vec<String> {
    let by_output: Vec<Option<String>> = p
        .stages
        .iter()
        .map(|s| {
            let out = s.outputs().into_iter().next()?;
            let rel = out.strip_prefix(&p.work_dir).ok()?;
            let name = rel.to_str()?.to_string();
            // Names go through shell scripts unquoted (`$(sed -n …)`).
            let plain = !name.is_empty() && !name.contains(char::is_whitespace);
            plain.then_some(name)
        })
        .collect();
    by_output
        .iter()
        .enumerate()
        .map(|(i, n)| match n {
            Some(n) if by_output.iter().filter(|m| m.as_ref() == Some(n)).count() == 1 => n.clone(),
            _ => format!("{:02}-{}", i + 1, p.stages[i].name()),
        })
        .collect()
}

/// The index (from 0) of the stage called `name`: one of [`stage_names`], or its number from 1.
pub fn find_stage(p: &Pipeline, name: &str) -> Result<usize, PipelineError> {
    let names = stage_names(p);
    let trimmed = name.trim_end_matches('/');
    if let Some(i) = names.iter().position(|n| n == trimmed) {
        return Ok(i);
    }
    match name.parse::<usize>() {
        Ok(n) if (1..=names.len()).contains(&n) => Ok(n - 1),
        _ => Err(PipelineError::NoStage {
            path: p.path.clone(),
            name: name.to_string(),
            names: names.join(", "),
        }),
    }
}

/// Stage `i` may run alone once every earlier stage whose output it reads has finished:
/// `finished(j)` is stage j's record (`None`: no record). An output that exists without a
/// record was made outside the pipeline and is taken as it is.
pub fn check_inputs_ready(
    p: &Pipeline,
    i: usize,
    finished: impl Fn(usize) -> Option<bool>,
) -> Result<(), PipelineError> {
    let names = stage_names(p);
    let makes = |j: usize, input: &Path| {
        p.stages[j]
            .outputs()
            .iter()
            .any(|out| input == *out || input.starts_with(out))
    };
    for input in p.stages[i].inputs() {
        let Some(j) = (0..i).rev().find(|&j| makes(j, input)) else {
            continue;
        };
        let ready = match finished(j) {
            Some(done) => done && input.exists(),
            None => input.exists(),
        };
        if !ready {
            return Err(PipelineError::NotReady {
                path: p.path.clone(),
                index: i + 1,
                kind: p.stages[i].name(),
                input: input.to_path_buf(),
                before: j + 1,
                before_name: names[j].clone(),
            });
        }
    }
    Ok(())
}
