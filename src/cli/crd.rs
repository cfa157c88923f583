//! `weir crd`: the generated CustomResourceDefinitions.

use anyhow::Context as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Write `<crd name>.yaml` files into this directory instead of printing.
    #[arg(long)]
    output_dir: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let crds = crate::crd::all();
    match args.output_dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            for crd in &crds {
                let path = dir.join(crate::crd::file_name(crd));
                std::fs::write(&path, crate::crd::to_yaml(crd)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        None => {
            for crd in &crds {
                print!("---\n{}", crate::crd::to_yaml(crd)?);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
