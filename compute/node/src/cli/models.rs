//! `stagecast-node models`: every manifest (models and chains), and whether it loads.

use std::process::ExitCode;

use stagecast_compute::model::Entry;
use stagecast_compute::{Catalog, Model};

use super::NodeArgs;

pub async fn run(node: &NodeArgs) -> anyhow::Result<ExitCode> {
    let runtime = node.runtime(None);
    let catalog = Catalog::load(&runtime.models_dir)?;
    let mut all_load = true;
    for name in catalog.names() {
        match catalog.entry(name)? {
            Entry::Model(m) => {
                println!("{name}  {}", m.description);
                println!("  file    {}", catalog.model_path(m).display());
            }
            Entry::Chain(c) => {
                println!("{name}  {}", c.description);
                println!("  chain   {}", c.chain.join(" -> "));
            }
        }
        let loaded = tokio::task::spawn_blocking({
            let (catalog, name, runtime) = (catalog.clone(), name.to_owned(), runtime.clone());
            move || Model::load(&catalog, &name, &runtime)
        })
        .await?;
        match loaded {
            Ok(model) => {
                for link in model.links() {
                    for net in link.nets() {
                        let t = net.input();
                        println!(
                            "  input   {} {} ({})",
                            t.name,
                            shape(&t.shape),
                            link.manifest().name
                        );
                        for t in net.outputs() {
                            println!("  output  {} {}", t.name, shape(&t.shape));
                        }
                    }
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
