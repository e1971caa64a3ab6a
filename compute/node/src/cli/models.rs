//! `stagecast-node models`: every manifest, and whether its model loads.

use std::process::ExitCode;

use stagecast_compute::{Catalog, Model};

use super::NodeArgs;

pub async fn run(node: &NodeArgs) -> anyhow::Result<ExitCode> {
    let runtime = node.runtime(None);
    let catalog = Catalog::load(&runtime.models_dir)?;
    let mut all_load = true;
    for manifest in catalog.manifests() {
        println!("{}  {}", manifest.name, manifest.description);
        println!("  file    {}", catalog.model_path(manifest).display());
        let loaded = tokio::task::spawn_blocking({
            let (catalog, name, runtime) =
                (catalog.clone(), manifest.name.clone(), runtime.clone());
            move || Model::load(&catalog, &name, &runtime)
        })
        .await?;
        match loaded {
            Ok(model) => {
                for (role, t) in [("input", model.input()), ("output", model.output())] {
                    println!("  {role:<7} {} {}", t.name, shape(&t.shape));
                }
                println!("  status  loads on {}", model.device());
            }
            Err(e) => {
                all_load = false;
                println!("  status  {}: {e}", e.code());
            }
        }
    }
    Ok(if all_load {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `[?, 3, ?, ?]`: `?` is a dynamic dimension.
fn shape(dims: &[i64]) -> String {
    let dims: Vec<String> = dims
        .iter()
        .map(|&d| if d < 0 { "?".to_owned() } else { d.to_string() })
        .collect();
    format!("[{}]", dims.join(", "))
}
